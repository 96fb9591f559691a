// An NBD server (fixed newstyle) exporting block devices to QEMU, the Linux kernel's nbd
// client, libnbd tools and nbdfuse. Many requests in flight per connection, replies out of
// order, bytes in flight capped per connection and per server (slow clients are back-pressured).
import { createServer } from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import { rm } from "node:fs/promises";
import { dataExtent, OutOfRangeError, ReadOnlyError } from "../block/block-device.ts";
import type { BlockDevice } from "../block/block-device.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { stripUndefined } from "../lib/options.ts";
import { ByteQueue, ConnectionClosedError } from "./byte-queue.ts";
import * as P from "./protocol.ts";

export interface NbdExport {
  name: string;
  description?: string;
  device: BlockDevice;
  /**
   * Which clients may see and open it (by remote address; undefined for unix sockets). Others
   * are told it does not exist. Absent: every client.
   */
  allow?: (remote: string | undefined) => boolean;
  /** false: opened by its name only, never listed (names that are secrets). Default true. */
  listed?: boolean;
}

export interface NbdServerOptions {
  exports: NbdExport[];
  /**
   * Whether a client asking for the empty name gets the first export (handy for one-export
   * servers; off where each export belongs to one machine).
   */
  defaultExport?: boolean;
  logger?: Logger;
  /** Largest READ or WRITE accepted (bigger get EOVERFLOW/EINVAL). */
  maxRequestBytes?: number;
  /** Bytes of requests being served per connection before it stops reading new ones. */
  maxInFlightPerConnection?: number;
  /** The same, summed over all connections. */
  maxInFlightPerServer?: number;
  /**
   * Milliseconds from accept to the transmission phase (NBD_OPT_GO / EXPORT_NAME done); a
   * connection still haggling then is closed. Connections in the transmission phase are never
   * timed out for idleness: a booted kernel may leave its root disk idle for hours.
   */
  handshakeTimeoutMs?: number;
  /** Open connections in all (any phase); one more is closed at once. */
  maxConnections?: number;
  /** Open connections from one remote address (TCP only); one more is closed at once. */
  maxConnectionsPerAddress?: number;
  /**
   * Called when a connection that reached the transmission phase ends, with the name of the
   * export it was attached to and the client's address (undefined for unix sockets).
   */
  onDisconnect?: (exportName: string, remote: string | undefined) => void;
  /** How export names appear in logs (names that carry a secret are cut). Default: as they are. */
  logName?: (exportName: string) => string;
}

/** Time a client has to finish the handshake: real clients need milliseconds. */
export const DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS: number = 10_000;
/** Connections in all: a few per machine booted, far above any LAN's needs. */
export const DEFAULT_NBD_MAX_CONNECTIONS: number = 512;
/** Connections from one address: qemu/nbdcopy multi-conn use up to 4-8 per disk. */
export const DEFAULT_NBD_MAX_CONNECTIONS_PER_ADDRESS: number = 16;

export const DEFAULT_NBD_OPTIONS = Object.freeze({
  maxRequestBytes: 32 * 1024 * 1024,
  maxInFlightPerConnection: 64 * 1024 * 1024,
  maxInFlightPerServer: 256 * 1024 * 1024,
  handshakeTimeoutMs: DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS,
  maxConnections: DEFAULT_NBD_MAX_CONNECTIONS,
  maxConnectionsPerAddress: DEFAULT_NBD_MAX_CONNECTIONS_PER_ADDRESS,
});

/** Unsent option replies (bytes) after which the server reads no more options until they drain. */
const MAX_UNSENT_OPTION_REPLIES = 1024 * 1024;
/** At most one log line per this many milliseconds for each kind of refused connection. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** "::ffff:10.0.0.1" and "10.0.0.1" are one client. */
function addressKey(remote: string): string {
  return remote.startsWith("::ffff:") ? remote.slice(7) : remote;
}

/** Where to listen: `unix:PATH` or `tcp:HOST:PORT` (see parseListen). */
export type ListenAddress = { path: string } | { host: string; port: number };

export function parseListen(text: string): ListenAddress {
  if (text.startsWith("unix:")) return { path: text.slice(5) };
  const m = /^(?:tcp:)?(\[[^\]]+\]|[^:]+):(\d+)$/.exec(text);
  if (!m)
    throw new Error(`Cannot parse listen address "${text}": expected unix:PATH or tcp:HOST:PORT`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** The NBD URI clients use for an export at an address (nbd://, nbd+unix://). */
export function nbdUri(address: ListenAddress, exportName: string): string {
  const name = encodeURIComponent(exportName);
  if ("path" in address) return `nbd+unix:///${name}?socket=${address.path}`;
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}

const BASE_ALLOCATION_ID = 1;

/** Counters for metrics: connections, requests by command, errors and data bytes. */
export interface NbdStats {
  connections: number;
  requests: Record<string, number>;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  /** Connections closed at accept for being past maxConnections / maxConnectionsPerAddress. */
  refused: number;
  /** Connections closed for not finishing the handshake within handshakeTimeoutMs. */
  handshakeTimeouts: number;
}

const COMMAND_NAMES: Record<number, string> = {
  [P.NBD_CMD_READ]: "read",
  [P.NBD_CMD_WRITE]: "write",
  [P.NBD_CMD_FLUSH]: "flush",
  [P.NBD_CMD_TRIM]: "trim",
  [P.NBD_CMD_CACHE]: "cache",
  [P.NBD_CMD_WRITE_ZEROES]: "write_zeroes",
  [P.NBD_CMD_BLOCK_STATUS]: "block_status",
};

export class NbdServer {
  readonly stats: NbdStats = {
    connections: 0,
    requests: {},
    errors: 0,
    bytesRead: 0,
    bytesWritten: 0,
    refused: 0,
    handshakeTimeouts: 0,
  };
  readonly #exports = new Map<string, NbdExport>();
  readonly #log: Logger;
  readonly #defaultExport: boolean;
  readonly #opts: typeof DEFAULT_NBD_OPTIONS;
  readonly #servers: Server[] = [];
  readonly #sockets = new Set<Socket>();
  readonly #unixPaths: string[] = [];
  #inFlight = 0;
  readonly #inFlightWaiters: (() => void)[] = [];
  #nextConnection = 1;
  /** Open connections per remote address (TCP). */
  readonly #perAddress = new Map<string, number>();
  /** Connections in the transmission phase per export name. */
  readonly #attached = new Map<string, number>();
  readonly #onDisconnect: NbdServerOptions["onDisconnect"];
  readonly #logName: (name: string) => string;
  /** Per refusal reason: when it was last logged and how many were refused since. */
  readonly #refusals = new Map<string, { at: number; suppressed: number }>();

  constructor(options: NbdServerOptions) {
    for (const e of options.exports) this.#exports.set(e.name, e);
    this.#defaultExport = options.defaultExport ?? true;
    this.#log = options.logger ?? silentLogger;
    this.#onDisconnect = options.onDisconnect;
    this.#logName = options.logName ?? ((n) => n);
    const { maxRequestBytes, maxInFlightPerConnection, maxInFlightPerServer } = options;
    const { handshakeTimeoutMs, maxConnections, maxConnectionsPerAddress } = options;
    this.#opts = {
      ...DEFAULT_NBD_OPTIONS,
      ...stripUndefined({
        maxRequestBytes,
        maxInFlightPerConnection,
        maxInFlightPerServer,
        handshakeTimeoutMs,
        maxConnections,
        maxConnectionsPerAddress,
      }),
    };
  }

  async listen(address: ListenAddress): Promise<ListenAddress> {
    const server = createServer((socket) => this.handle(socket));
    this.#servers.push(server);
    if ("path" in address) {
      await rm(address.path, { force: true });
      this.#unixPaths.push(address.path);
    }
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      if ("path" in address) server.listen(address.path, resolve);
      else server.listen(address.port, address.host, resolve);
    });
    if ("path" in address) return address;
    const a = server.address() as AddressInfo;
    return { host: address.host, port: a.port };
  }

  /** Serves one connection (exposed so tests can hand in any socket). */
  handle(socket: Socket): void {
    const remote = socket.remoteAddress;
    const key = remote === undefined ? undefined : addressKey(remote);
    if (this.#sockets.size >= this.#opts.maxConnections) {
      this.#refuse(socket, "too many connections", { limit: this.#opts.maxConnections });
      return;
    }
    if (
      key !== undefined &&
      (this.#perAddress.get(key) ?? 0) >= this.#opts.maxConnectionsPerAddress
    ) {
      this.#refuse(socket, "too many connections from one address", {
        remote: key,
        limit: this.#opts.maxConnectionsPerAddress,
      });
      return;
    }
    socket.setNoDelay(true);
    this.stats.connections++;
    this.#sockets.add(socket);
    if (key !== undefined) this.#perAddress.set(key, (this.#perAddress.get(key) ?? 0) + 1);
    socket.once("close", () => {
      this.#sockets.delete(socket);
      if (key === undefined) return;
      const n = (this.#perAddress.get(key) ?? 1) - 1;
      if (n > 0) this.#perAddress.set(key, n);
      else this.#perAddress.delete(key);
    });
    const conn = new Connection(this, socket, this.#nextConnection++);
    conn.run().catch((err: unknown) => {
      this.warnLimited(
        "nbd connection failed",
        { conn: conn.id, err: (err as Error).message },
        `failed ${socket.remoteAddress}`,
      );
      socket.destroy();
    });
  }

  /** Closes a connection past a limit at once; logs at most once per interval per reason. */
  #refuse(socket: Socket, reason: string, detail: Record<string, unknown>): void {
    socket.on("error", () => undefined);
    socket.destroy();
    this.stats.refused++;
    this.warnLimited(`nbd connection refused: ${reason}`, detail);
  }

  /**
   * Logs `message` at most once per REFUSAL_LOG_INTERVAL_MS (with how many were suppressed):
   * for events a client can cause at will (refusals, timeouts), so it cannot flood the log.
   */
  warnLimited(message: string, detail: Record<string, unknown>, key = message): void {
    const now = Date.now();
    const r = this.#refusals.get(key);
    if (r && now - r.at < REFUSAL_LOG_INTERVAL_MS) {
      r.suppressed++;
      return;
    }
    if (this.#refusals.size >= 1024) this.#refusals.clear();
    this.#refusals.set(key, { at: now, suppressed: 0 });
    this.#log.warn({ ...detail, suppressedSinceLast: r?.suppressed ?? 0 }, message);
  }

  /**
   * Connections now in the transmission phase on the export named `name` (whatever device
   * they were given when they attached: replacing or removing the export does not detach them).
   */
  /** An export name as logs show it. */
  logName(name: string): string {
    return this.#logName(name.slice(0, 256));
  }

  clientsOf(name: string): number {
    return this.#attached.get(name) ?? 0;
  }

  /** Bookkeeping for clientsOf / onDisconnect (called by connections). */
  attached(name: string): void {
    this.#attached.set(name, this.clientsOf(name) + 1);
  }

  detached(name: string, remote: string | undefined): void {
    const n = this.clientsOf(name) - 1;
    if (n > 0) this.#attached.set(name, n);
    else this.#attached.delete(name);
    try {
      this.#onDisconnect?.(name, remote);
    } catch (err) {
      this.#log.warn(
        { export: this.logName(name), err: (err as Error).message },
        "nbd onDisconnect failed",
      );
    }
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const p of this.#unixPaths) await rm(p, { force: true });
  }

  /** Bytes of READ/WRITE requests being served right now, over all connections. */
  get inFlightBytes(): number {
    return this.#inFlight;
  }

  get log(): Logger {
    return this.#log;
  }

  get options(): typeof DEFAULT_NBD_OPTIONS {
    return this.#opts;
  }

  /**
   * Adds (or replaces) an export. Connections already attached keep the device they had (and
   * still count in clientsOf(name)); only new connections see the new one.
   */
  setExport(e: NbdExport): void {
    this.#exports.set(e.name, e);
  }

  /**
   * Stops offering an export to new connections. Connections already attached keep its device
   * until they disconnect: check clientsOf(name) before closing the device.
   */
  removeExport(name: string): NbdExport | undefined {
    const e = this.#exports.get(name);
    this.#exports.delete(name);
    return e;
  }

  /** The export `remote` asks for by name, if it exists and `remote` may open it. */
  exportNamed(name: string, remote?: string): NbdExport | undefined {
    let e: NbdExport | undefined;
    if (name === "" && this.#defaultExport && this.#exports.size >= 1 && !this.#exports.has(""))
      e = this.#exports.values().next().value;
    else e = this.#exports.get(name);
    if (e?.allow && !e.allow(remote)) {
      this.warnLimited(
        "nbd export refused to this client",
        { remote, export: this.logName(name) },
        `refused ${remote}`,
      );
      return undefined;
    }
    return e;
  }

  /** The names `remote` may see (NBD_OPT_LIST). */
  exportNames(remote?: string): string[] {
    return [...this.#exports.values()]
      .filter((e) => e.listed !== false && (!e.allow || e.allow(remote)))
      .map((e) => e.name);
  }

  /** Server-wide in-flight accounting: waits while the server as a whole is over its cap. */
  async acquire(bytes: number): Promise<void> {
    while (this.#inFlight > 0 && this.#inFlight + bytes > this.#opts.maxInFlightPerServer) {
      await new Promise<void>((r) => this.#inFlightWaiters.push(r));
    }
    this.#inFlight += bytes;
  }

  release(bytes: number): void {
    this.#inFlight -= bytes;
    for (const w of this.#inFlightWaiters.splice(0)) w();
  }
}

function transmissionFlags(device: BlockDevice): number {
  let flags = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_DF | P.NBD_FLAG_SEND_CACHE;
  if (device.readOnly) flags |= P.NBD_FLAG_READ_ONLY | P.NBD_FLAG_CAN_MULTI_CONN;
  else {
    flags |=
      P.NBD_FLAG_SEND_FLUSH |
      P.NBD_FLAG_SEND_FUA |
      P.NBD_FLAG_SEND_TRIM |
      P.NBD_FLAG_SEND_WRITE_ZEROES;
  }
  return flags;
}

/**
 * Bytes the server holds while serving `req`: the data of READ and WRITE, what CACHE reads to
 * warm the layers below, and the zero buffer of WRITE_ZEROES on a device without writeZeroes.
 */
function heldBytes(req: P.Request, device: BlockDevice, max: number): number {
  switch (req.type) {
    case P.NBD_CMD_READ:
    case P.NBD_CMD_WRITE:
    case P.NBD_CMD_CACHE:
      return Math.min(req.length, max);
    case P.NBD_CMD_WRITE_ZEROES:
      return device.writeZeroes ? 0 : Math.min(req.length, max);
    default:
      return 0;
  }
}

function errnoFor(err: unknown): number {
  if (err instanceof ReadOnlyError) return P.NBD_EPERM;
  if (err instanceof OutOfRangeError) return P.NBD_EINVAL;
  return P.NBD_EIO;
}

class Connection {
  readonly id: number;
  readonly #server: NbdServer;
  readonly #socket: Socket;
  readonly #in: ByteQueue;
  readonly #log: Logger;
  #structured = false;
  #baseAllocation = false;
  #noZeroes = false;
  #inFlight = 0;
  #waiters: (() => void)[] = [];
  #pending = new Set<Promise<void>>();

  constructor(server: NbdServer, socket: Socket, id: number) {
    this.#server = server;
    this.#socket = socket;
    this.id = id;
    this.#in = new ByteQueue(socket);
    this.#log = server.log.child({ conn: id });
  }

  async run(): Promise<void> {
    this.#log.debug({ remote: this.#socket.remoteAddress ?? "unix" }, "nbd connection");
    const deadline = setTimeout(() => {
      this.#server.stats.handshakeTimeouts++;
      this.#server.warnLimited("nbd handshake not finished in time; connection closed", {
        remote: this.#socket.remoteAddress,
        ms: this.#server.options.handshakeTimeoutMs,
      });
      this.#socket.destroy();
    }, this.#server.options.handshakeTimeoutMs);
    deadline.unref();
    this.#socket.write(P.encodeHandshake());
    try {
      const clientFlags = (await this.#in.read(4)).readUInt32BE(0);
      if ((clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE) === 0) {
        throw new P.NbdProtocolError(
          `client flags 0x${clientFlags.toString(16)} lack FIXED_NEWSTYLE (old clients are not supported)`,
        );
      }
      if ((clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
        throw new P.NbdProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
      }
      this.#noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
      const chosen = await this.#negotiate();
      clearTimeout(deadline);
      if (!chosen) return;
      this.#log.info(
        { export: this.#server.logName(chosen.name), structured: this.#structured },
        "nbd client attached",
      );
      this.#server.attached(chosen.name);
      try {
        await this.#transmit(chosen);
      } finally {
        await Promise.allSettled(this.#pending);
        this.#server.detached(chosen.name, this.#socket.remoteAddress);
      }
    } catch (err) {
      if (err instanceof ConnectionClosedError) {
        this.#log.debug("nbd client went away");
      } else if (err instanceof P.NbdProtocolError) {
        // Garbage from the client: this connection only is closed.
        this.#server.warnLimited(
          "nbd protocol error; closing the connection",
          { err: err.message },
          `protocol ${this.#socket.remoteAddress}`,
        );
      } else throw err;
    } finally {
      clearTimeout(deadline);
      await Promise.allSettled(this.#pending);
      this.#socket.end();
    }
  }

  /** Resolves once unsent replies are below `limit` bytes (or the connection is gone). */
  async #drained(limit: number): Promise<void> {
    while (this.#socket.writableLength > limit && !this.#socket.destroyed) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#socket.off("drain", done);
          this.#socket.off("close", done);
          resolve();
        };
        this.#socket.on("drain", done);
        this.#socket.on("close", done);
      });
    }
  }

  #reply(option: number, type: number, data?: Uint8Array): void {
    this.#socket.write(P.encodeOptionReply(option, type, data));
  }

  /** Option haggling; returns the export to serve, or null when the client aborted. */
  async #negotiate(): Promise<NbdExport | null> {
    for (;;) {
      // A client that sends options but never reads the replies is not buffered for.
      await this.#drained(MAX_UNSENT_OPTION_REPLIES);
      const { option, length } = P.decodeOptionHeader(await this.#in.read(P.OPTION_HEADER_SIZE));
      if (length > P.MAX_OPTION_LENGTH) {
        await this.#in.skip(length);
        this.#reply(option, P.NBD_REP_ERR_TOO_BIG);
        continue;
      }
      const data = length > 0 ? await this.#in.read(length) : Buffer.alloc(0);
      switch (option) {
        case P.NBD_OPT_EXPORT_NAME: {
          const e = this.#server.exportNamed(data.toString("utf8"), this.#socket.remoteAddress);
          if (!e)
            throw new P.NbdProtocolError(
              `unknown export "${this.#server.logName(data.toString("utf8"))}" requested with NBD_OPT_EXPORT_NAME`,
            );
          this.#socket.write(
            P.encodeExportNameReply(e.device.size, transmissionFlags(e.device), this.#noZeroes),
          );
          return e;
        }
        case P.NBD_OPT_ABORT:
          this.#reply(option, P.NBD_REP_ACK);
          return null;
        case P.NBD_OPT_LIST:
          if (length !== 0) {
            this.#reply(option, P.NBD_REP_ERR_INVALID);
            break;
          }
          for (const name of this.#server.exportNames(this.#socket.remoteAddress))
            this.#reply(option, P.NBD_REP_SERVER, P.encodeServerEntry(name));
          this.#reply(option, P.NBD_REP_ACK);
          break;
        case P.NBD_OPT_INFO:
        case P.NBD_OPT_GO: {
          let req: { name: string; requests: number[] };
          try {
            req = P.decodeInfoRequest(data);
          } catch {
            this.#reply(option, P.NBD_REP_ERR_INVALID);
            break;
          }
          const e = this.#server.exportNamed(req.name, this.#socket.remoteAddress);
          if (!e) {
            this.#reply(
              option,
              P.NBD_REP_ERR_UNKNOWN,
              Buffer.from(`no export named "${req.name}"`),
            );
            break;
          }
          this.#reply(
            option,
            P.NBD_REP_INFO,
            P.encodeInfoExport(e.device.size, transmissionFlags(e.device)),
          );
          if (req.requests.includes(P.NBD_INFO_NAME))
            this.#reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, e.name));
          if (req.requests.includes(P.NBD_INFO_DESCRIPTION) && e.description) {
            this.#reply(
              option,
              P.NBD_REP_INFO,
              P.encodeInfoString(P.NBD_INFO_DESCRIPTION, e.description),
            );
          }
          this.#reply(
            option,
            P.NBD_REP_INFO,
            P.encodeInfoBlockSize(1, 4096, this.#server.options.maxRequestBytes),
          );
          this.#reply(option, P.NBD_REP_ACK);
          if (option === P.NBD_OPT_GO) return e;
          break;
        }
        case P.NBD_OPT_STRUCTURED_REPLY:
          if (length !== 0) this.#reply(option, P.NBD_REP_ERR_INVALID);
          else {
            this.#structured = true;
            this.#reply(option, P.NBD_REP_ACK);
          }
          break;
        case P.NBD_OPT_LIST_META_CONTEXT:
        case P.NBD_OPT_SET_META_CONTEXT: {
          let req: { name: string; queries: string[] };
          try {
            req = P.decodeMetaContextRequest(data);
          } catch {
            this.#reply(option, P.NBD_REP_ERR_INVALID);
            break;
          }
          if (!this.#structured) {
            this.#reply(
              option,
              P.NBD_REP_ERR_INVALID,
              Buffer.from("negotiate NBD_OPT_STRUCTURED_REPLY first"),
            );
            break;
          }
          if (!this.#server.exportNamed(req.name, this.#socket.remoteAddress)) {
            this.#reply(option, P.NBD_REP_ERR_UNKNOWN);
            break;
          }
          const listAll = option === P.NBD_OPT_LIST_META_CONTEXT && req.queries.length === 0;
          const match =
            listAll || req.queries.some((q) => q === P.BASE_ALLOCATION || q === "base:");
          if (option === P.NBD_OPT_SET_META_CONTEXT) this.#baseAllocation = match;
          if (match)
            this.#reply(
              option,
              P.NBD_REP_META_CONTEXT,
              P.encodeMetaContext(BASE_ALLOCATION_ID, P.BASE_ALLOCATION),
            );
          this.#reply(option, P.NBD_REP_ACK);
          break;
        }
        default:
          this.#reply(option, P.NBD_REP_ERR_UNSUP);
      }
    }
  }

  async #transmit(e: NbdExport): Promise<void> {
    const max = this.#server.options.maxRequestBytes;
    for (;;) {
      // Replies of requests that hold no data (errors, FLUSH...) are bounded here too.
      await this.#drained(this.#server.options.maxInFlightPerConnection);
      const req = P.decodeRequest(await this.#in.read(P.REQUEST_HEADER_SIZE));
      if (req.type === P.NBD_CMD_DISC) {
        this.#log.debug("nbd client disconnected");
        return;
      }
      let payload: Buffer | null = null;
      if (req.type === P.NBD_CMD_WRITE) {
        if (req.length > max) {
          // Keep the stream in sync: consume and drop the payload, then refuse.
          await this.#in.skip(req.length);
          this.#sendError(
            req,
            P.NBD_EINVAL,
            `write of ${req.length} bytes exceeds the maximum ${max}`,
          );
          continue;
        }
        payload = await this.#in.read(req.length);
      }
      const cost = heldBytes(req, e.device, max);
      await this.#acquire(cost);
      const job = this.#serve(e.device, req, payload).finally(() => this.#release(cost));
      this.#pending.add(job);
      void job.finally(() => this.#pending.delete(job));
    }
  }

  async #acquire(bytes: number): Promise<void> {
    const limit = this.#server.options.maxInFlightPerConnection;
    while (
      this.#inFlight > 0 &&
      (this.#inFlight + bytes > limit || this.#socket.writableLength > limit)
    ) {
      await new Promise<void>((r) => this.#waiters.push(r));
    }
    this.#inFlight += bytes;
    await this.#server.acquire(bytes);
  }

  #release(bytes: number): void {
    this.#inFlight -= bytes;
    this.#server.release(bytes);
    const wake = (): void => {
      for (const w of this.#waiters.splice(0)) w();
    };
    // Let the socket drain before taking more work when replies pile up unsent.
    if (this.#socket.writableLength > this.#server.options.maxInFlightPerConnection)
      this.#socket.once("drain", wake);
    else wake();
  }

  #sendError(req: P.Request, errno: number, message: string): void {
    this.#server.stats.errors++;
    this.#log.debug(
      { type: req.type, offset: req.offset, length: req.length, errno, message },
      "nbd request refused",
    );
    if (this.#structured) this.#socket.write(P.encodeStructuredError(req.handle, errno, message));
    else this.#socket.write(P.encodeSimpleReply(req.handle, errno));
  }

  #sendOk(req: P.Request): void {
    if (this.#structured) {
      this.#socket.write(
        P.encodeStructuredHeader(req.handle, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, 0),
      );
    } else this.#socket.write(P.encodeSimpleReply(req.handle, 0));
  }

  async #serve(device: BlockDevice, req: P.Request, payload: Buffer | null): Promise<void> {
    const { offset, length } = req;
    const inRange = offset + length <= device.size;
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    const stats = this.#server.stats;
    const command = COMMAND_NAMES[req.type] ?? "other";
    stats.requests[command] = (stats.requests[command] ?? 0) + 1;
    try {
      switch (req.type) {
        case P.NBD_CMD_READ: {
          if (length > this.#server.options.maxRequestBytes) {
            return this.#sendError(
              req,
              P.NBD_EOVERFLOW,
              `read of ${length} bytes exceeds the maximum`,
            );
          }
          if (!inRange)
            return this.#sendError(req, P.NBD_EINVAL, `read beyond the end of the export`);
          const data = length === 0 ? Buffer.alloc(0) : await device.read(offset, length);
          stats.bytesRead += length;
          if (this.#structured) {
            const head = P.encodeStructuredHeader(
              req.handle,
              P.NBD_REPLY_FLAG_DONE,
              P.NBD_REPLY_TYPE_OFFSET_DATA,
              8 + length,
            );
            const off = Buffer.alloc(8);
            off.writeBigUInt64BE(BigInt(offset));
            this.#socket.cork();
            this.#socket.write(head);
            this.#socket.write(off);
            this.#socket.write(data);
            this.#socket.uncork();
          } else {
            this.#socket.cork();
            this.#socket.write(P.encodeSimpleReply(req.handle, 0));
            this.#socket.write(data);
            this.#socket.uncork();
          }
          return;
        }
        case P.NBD_CMD_WRITE:
          if (device.readOnly || !device.write)
            return this.#sendError(req, P.NBD_EPERM, "the export is read-only");
          if (!inRange)
            return this.#sendError(req, P.NBD_ENOSPC, "write beyond the end of the export");
          await device.write(offset, payload!, { fua });
          stats.bytesWritten += length;
          return this.#sendOk(req);
        case P.NBD_CMD_FLUSH:
          await device.flush?.();
          return this.#sendOk(req);
        case P.NBD_CMD_TRIM:
          if (device.readOnly) return this.#sendError(req, P.NBD_EPERM, "the export is read-only");
          if (!inRange)
            return this.#sendError(req, P.NBD_EINVAL, "trim beyond the end of the export");
          await device.trim?.(offset, length);
          if (fua) await device.flush?.();
          return this.#sendOk(req);
        case P.NBD_CMD_WRITE_ZEROES:
          if (device.readOnly) return this.#sendError(req, P.NBD_EPERM, "the export is read-only");
          if (!inRange)
            return this.#sendError(req, P.NBD_ENOSPC, "write beyond the end of the export");
          if (device.writeZeroes) await device.writeZeroes(offset, length, { fua });
          else if (!device.write)
            return this.#sendError(req, P.NBD_EPERM, "the export is read-only");
          else {
            // At most maxRequestBytes of zeroes at a time (the length may be up to 4 GiB).
            const step = Math.min(length, this.#server.options.maxRequestBytes);
            const zeroes = Buffer.alloc(step);
            for (let pos = 0; pos < length; pos += step) {
              const n = Math.min(step, length - pos);
              await device.write(offset + pos, n === step ? zeroes : zeroes.subarray(0, n), {
                fua,
              });
            }
          }
          return this.#sendOk(req);
        case P.NBD_CMD_CACHE:
          if (!inRange)
            return this.#sendError(req, P.NBD_EINVAL, "cache beyond the end of the export");
          await device.read(offset, Math.min(length, this.#server.options.maxRequestBytes));
          return this.#sendOk(req);
        case P.NBD_CMD_BLOCK_STATUS:
          return await this.#blockStatus(device, req, inRange);
        default:
          return this.#sendError(req, P.NBD_EINVAL, `unknown command ${req.type}`);
      }
    } catch (err) {
      const errno = errnoFor(err);
      this.#log.warn(
        { type: req.type, offset, length, err: (err as Error).message },
        "nbd request failed",
      );
      this.#sendError(req, errno, (err as Error).message);
    }
  }

  async #blockStatus(device: BlockDevice, req: P.Request, inRange: boolean): Promise<void> {
    if (!this.#structured || !this.#baseAllocation) {
      return this.#sendError(
        req,
        P.NBD_EINVAL,
        "negotiate structured replies and base:allocation first",
      );
    }
    if (!inRange || req.length === 0)
      return this.#sendError(req, P.NBD_EINVAL, "block status outside the export");
    const extents = device.extents
      ? await device.extents(req.offset, req.length)
      : dataExtent(req.offset, req.length);
    const end = req.offset + req.length;
    const descriptors: [number, number][] = [];
    for (const ext of extents) {
      const from = Math.max(ext.offset, req.offset);
      const to = Math.min(ext.offset + ext.length, end);
      if (to <= from) continue;
      const flags = (ext.hole ? P.NBD_STATE_HOLE : 0) | (ext.zero ? P.NBD_STATE_ZERO : 0);
      // Descriptor lengths are 32-bit.
      for (let pos = from; pos < to; pos += 0x80000000)
        descriptors.push([Math.min(0x80000000, to - pos), flags]);
      if ((req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0) break;
    }
    if ((req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0) descriptors.splice(1);
    const payload = Buffer.alloc(4 + 8 * descriptors.length);
    payload.writeUInt32BE(BASE_ALLOCATION_ID, 0);
    descriptors.forEach(([len, flags], i) => {
      payload.writeUInt32BE(len, 4 + 8 * i);
      payload.writeUInt32BE(flags, 8 + 8 * i);
    });
    this.#socket.write(
      Buffer.concat([
        P.encodeStructuredHeader(
          req.handle,
          P.NBD_REPLY_FLAG_DONE,
          P.NBD_REPLY_TYPE_BLOCK_STATUS,
          payload.length,
        ),
        payload,
      ]),
    );
  }
}
