// An NBD server (fixed newstyle) exporting block devices to QEMU, the Linux kernel's nbd
// client, libnbd tools and nbdfuse. Many requests in flight per connection, replies out of
// order, bytes in flight capped per connection and per server (slow clients are back-pressured).
// This file is the server: listening, admitting connections, the exports and the bookkeeping;
// one connection's protocol is in connection.ts (negotiation.ts, transmission.ts).
import { createServer } from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import { rm } from "node:fs/promises";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { Connection } from "./connection.ts";
import { BufferPool } from "../lib/buffer-pool.ts";
import type { ConnectionHost } from "./connection-host.ts";
import { ConnectionLimits } from "./connection-limits.ts";
import { InFlightBudget } from "./in-flight.ts";
import type { ListenAddress } from "./listen-address.ts";
import { resolveNbdLimits } from "./options.ts";
import type { NbdExport, NbdLimits, NbdServerOptions } from "./options.ts";
import { emptyNbdStats } from "./stats.ts";
import type { NbdStats } from "./stats.ts";

/** Idle reply buffers the server keeps for reuse (see BufferPool). */
const IDLE_REPLY_BUFFERS = 64 * 1024 * 1024;

// (Kept importable from here, where they were first defined.)
export { nbdUri, parseListen } from "./listen-address.ts";
export type { ListenAddress } from "./listen-address.ts";
export {
  DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_NBD_MAX_CONNECTIONS,
  DEFAULT_NBD_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_NBD_OPTIONS,
} from "./options.ts";
export type { NbdExport, NbdServerOptions } from "./options.ts";
export type { NbdStats } from "./stats.ts";

/** At most one log line per this many milliseconds for each kind of refused connection. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

export class NbdServer {
  readonly stats: NbdStats = emptyNbdStats();
  readonly #exports = new Map<string, NbdExport>();
  readonly #log: Logger;
  readonly #defaultExport: boolean;
  readonly #limits: NbdLimits;
  readonly #servers: Server[] = [];
  readonly #connections: ConnectionLimits;
  readonly #unixPaths: string[] = [];
  readonly #inFlight: InFlightBudget;
  #nextConnection = 1;
  /** Connections in the transmission phase per export name. */
  readonly #attached = new Map<string, number>();
  readonly #onDisconnect: NbdServerOptions["onDisconnect"];
  readonly #logName: (name: string) => string;
  /** Per refusal reason: when it was last logged and how many were refused since. */
  readonly #refusals = new Map<string, { at: number; suppressed: number }>();
  /** What connections may ask of this server (and nothing else of it is theirs). */
  readonly #host: ConnectionHost;

  constructor(options: NbdServerOptions) {
    for (const e of options.exports) this.#exports.set(e.name, e);
    this.#defaultExport = options.defaultExport ?? true;
    this.#log = options.logger ?? silentLogger;
    this.#onDisconnect = options.onDisconnect;
    this.#logName = options.logName ?? ((n) => n);
    this.#limits = resolveNbdLimits(options);
    this.#connections = new ConnectionLimits(this.#limits);
    this.#inFlight = new InFlightBudget(this.#limits.maxInFlightPerServer);
    this.#host = {
      stats: this.stats,
      // Idle reply buffers kept for reuse, server-wide: at most 64 MiB (or the in-flight cap).
      buffers: new BufferPool(
        Math.min(IDLE_REPLY_BUFFERS, this.#limits.maxInFlightPerServer),
        this.#limits.maxRequestBytes,
      ),
      limits: this.#limits,
      log: this.#log,
      logName: (name) => this.#logNameOf(name),
      exportNamed: (name, remote) => this.exportNamed(name, remote),
      exportNames: (remote) => this.exportNames(remote),
      warnLimited: (message, detail, key) => this.#warnLimited(message, detail, key),
      acquire: (bytes) => this.#inFlight.acquire(bytes),
      release: (bytes) => this.#inFlight.release(bytes),
      attached: (name) => this.#attachedTo(name),
      detached: (name, remote) => this.#detachedFrom(name, remote),
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
    const refusal = this.#connections.admit(socket);
    if (refusal) {
      this.#refuse(socket, refusal.reason, refusal.detail);
      return;
    }
    socket.setNoDelay(true);
    this.stats.connections++;
    const conn = new Connection(this.#host, socket, this.#nextConnection++);
    conn.run().catch((err: unknown) => {
      this.#warnLimited(
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
    this.#warnLimited(`nbd connection refused: ${reason}`, detail);
  }

  /**
   * Logs `message` at most once per REFUSAL_LOG_INTERVAL_MS (with how many were suppressed):
   * for events a client can cause at will (refusals, timeouts), so it cannot flood the log.
   */
  #warnLimited(message: string, detail: Record<string, unknown>, key = message): void {
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

  /** An export name as logs show it. */
  #logNameOf(name: string): string {
    return this.#logName(name.slice(0, 256));
  }

  /**
   * Connections now in the transmission phase on the export named `name` (whatever device
   * they were given when they attached: replacing or removing the export does not detach them).
   */
  clientsOf(name: string): number {
    return this.#attached.get(name) ?? 0;
  }

  /** Bookkeeping for clientsOf / onDisconnect (told by connections through the host). */
  #attachedTo(name: string): void {
    this.#attached.set(name, this.clientsOf(name) + 1);
  }

  #detachedFrom(name: string, remote: string | undefined): void {
    const n = this.clientsOf(name) - 1;
    if (n > 0) this.#attached.set(name, n);
    else this.#attached.delete(name);
    try {
      this.#onDisconnect?.(name, remote);
    } catch (err) {
      this.#log.warn(
        { export: this.#logNameOf(name), err: (err as Error).message },
        "nbd onDisconnect failed",
      );
    }
  }

  async close(): Promise<void> {
    for (const s of this.#connections.sockets) s.destroy();
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const p of this.#unixPaths) await rm(p, { force: true });
  }

  /** Bytes of READ/WRITE requests being served right now, over all connections. */
  get inFlightBytes(): number {
    return this.#inFlight.bytes;
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
      this.#warnLimited(
        "nbd export refused to this client",
        { remote, export: this.#logNameOf(name) },
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
}
