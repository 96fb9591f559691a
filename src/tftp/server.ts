// A read-only TFTP server: RFC 1350 with option negotiation (2347), blksize (2348), timeout and
// tsize (2349) and windowsize (7440). Each transfer has its own socket (its TID), retransmits
// with backoff, and ends by itself; writes and paths outside the tree get an error packet.
// Bounded against floods (requests can be spoofed): concurrent transfers in total and per client
// address, the timeout a client may ask for, the retransmission wait and a transfer's lifetime.
import { createSocket } from "node:dgram";
import type { RemoteInfo, Socket } from "node:dgram";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { stripUndefined } from "../lib/options.ts";
import { bindToInterface, bindUdp } from "../net/interface.ts";
import {
  dataHeader,
  decodeTftp,
  encodeTftp,
  ErrorCode,
  MAX_BLKSIZE,
  MAX_TIMEOUT_SECONDS,
  negotiate,
  Op,
  TftpDecodeError,
} from "./protocol.ts";
import type { TftpPacket } from "./protocol.ts";
import { NetasciiSource } from "./netascii.ts";
import { RateLimitedLog } from "../lib/rate-limited-log.ts";
import { TftpError } from "./tree.ts";
import type { TftpSource, TftpTree } from "./tree.ts";

export interface TftpTransferEvent {
  stage: "tftp-start" | "tftp-done" | "tftp-error";
  client: string;
  file: string;
  bytes?: number;
  ms?: number;
  blksize?: number;
  windowsize?: number;
  error?: string;
}

export interface TftpServerOptions {
  tree: TftpTree;
  port?: number;
  address?: string;
  interface?: string;
  maxBlksize?: number;
  maxWindowsize?: number;
  /** Retransmission timeout when the client asks for none. */
  timeoutMs?: number;
  /** Retransmissions of one window before the transfer is abandoned. */
  retries?: number;
  /** Transfers at once, all clients together; past it a request gets "server busy". */
  maxTransfers?: number;
  /** Transfers at once from one client address. */
  maxTransfersPerClient?: number;
  /** Longest timeout option (RFC 2349) accepted, in seconds; longer ones are not acknowledged. */
  maxTimeoutSeconds?: number;
  /** Longest wait for an ACK before a retransmission, however the backoff has grown. */
  maxRetransmitWaitMs?: number;
  /** Longest a transfer may live, start to last ACK; past it it is abandoned. */
  maxTransferMs?: number;
  logger?: Logger;
  onEvent?: (event: TftpTransferEvent) => void;
}

export interface TftpStats {
  requests: number;
  completed: number;
  failed: number;
  bytes: number;
  dropped: number;
  /** Requests answered "server busy" (a cap on transfers was reached). */
  busy: number;
  active: number;
}

type ResolvedOptions = TftpServerOptions & {
  port: number;
  address: string;
  maxBlksize: number;
  maxWindowsize: number;
  timeoutMs: number;
  retries: number;
  maxTransfers: number;
  maxTransfersPerClient: number;
  maxTimeoutSeconds: number;
  maxRetransmitWaitMs: number;
  maxTransferMs: number;
};

/**
 * Default cap on transfers at once. Each holds a socket and a file descriptor, so 256 keep the
 * process ~512 descriptors under a 1,024 limit with room for HTTP and NBD; a LAN booting 256
 * machines at the same instant is larger than any this server is meant for.
 */
export const DEFAULT_TFTP_MAX_TRANSFERS = 256;
/** Default cap per client address: firmware fetches one file at a time, iPXE at most a few. */
export const DEFAULT_TFTP_MAX_TRANSFERS_PER_CLIENT = 8;
/** Default longest wait between retransmissions (the backoff doubles up to this). */
export const DEFAULT_TFTP_MAX_RETRANSMIT_WAIT_MS = 10_000;
/**
 * Default longest lifetime of one transfer: 15 minutes, a 450 MB file at lockstep 512-byte
 * blocks over a 1 ms LAN; boot files are far smaller.
 */
export const DEFAULT_TFTP_MAX_TRANSFER_MS = 15 * 60_000;
/** The error text a request gets when a cap is reached (ERROR code 0, RFC 1350 section 5). */
export const TFTP_BUSY_MESSAGE = "server busy, try again";

export const DEFAULT_TFTP_OPTIONS = Object.freeze({
  port: 69,
  address: "0.0.0.0",
  maxBlksize: MAX_BLKSIZE,
  maxWindowsize: 64,
  timeoutMs: 1000,
  retries: 6,
  maxTransfers: DEFAULT_TFTP_MAX_TRANSFERS,
  maxTransfersPerClient: DEFAULT_TFTP_MAX_TRANSFERS_PER_CLIENT,
  maxTimeoutSeconds: MAX_TIMEOUT_SECONDS,
  maxRetransmitWaitMs: DEFAULT_TFTP_MAX_RETRANSMIT_WAIT_MS,
  maxTransferMs: DEFAULT_TFTP_MAX_TRANSFER_MS,
});

export class TftpServer {
  readonly #o: ResolvedOptions;
  readonly #log: Logger;
  #socket: Socket | null = null;
  readonly #transfers = new Set<Transfer>();
  /** Transfers at once per client address. */
  readonly #perClient = new Map<string, number>();
  readonly #limitedLog = new RateLimitedLog();
  #stats = { requests: 0, completed: 0, failed: 0, bytes: 0, dropped: 0, busy: 0 };

  constructor(options: TftpServerOptions) {
    this.#o = { ...DEFAULT_TFTP_OPTIONS, ...stripUndefined(options), tree: options.tree };
    this.#log = options.logger ?? silentLogger;
  }

  get stats(): TftpStats {
    return { ...this.#stats, active: this.#transfers.size };
  }

  get port(): number {
    return this.#socket?.address().port ?? 0;
  }

  async start(): Promise<void> {
    const socket = createSocket({ type: "udp4", reuseAddr: true });
    socket.on("message", (msg, rinfo) => this.#request(msg, rinfo));
    socket.on("error", (err) => this.#log.error({ err }, "tftp socket error"));
    await bindUdp(socket, this.#o.port, this.#o.address);
    if (this.#o.interface && !bindToInterface(socket, this.#o.interface)) {
      this.#log.warn({ interface: this.#o.interface }, "cannot restrict TFTP to one interface");
    }
    this.#socket = socket;
  }

  async stop(): Promise<void> {
    for (const t of this.#transfers) t.abort("server stopping");
    const s = this.#socket;
    this.#socket = null;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /**
   * At a cap, a transfer whose client never acknowledged anything makes way (oldest first): from
   * the same address at any age (firmware that retries with a new port has given up on it),
   * from any address once its first timeout has passed (a spoofed request is never answered).
   * Transfers that have heard from their client are never cut short.
   */
  #makeRoom(address: string): void {
    const atClientCap = (this.#perClient.get(address) ?? 0) >= this.#o.maxTransfersPerClient;
    const atCap = this.#transfers.size >= this.#o.maxTransfers;
    if (!atClientCap && !atCap) return;
    const victim = pickVictim(this.#transfers, address, atClientCap, this.#o.timeoutMs);
    victim?.abort("superseded: no answer from the client");
  }

  #request(msg: Buffer, rinfo: RemoteInfo): void {
    const client = `${rinfo.address}:${rinfo.port}`;
    let packet: TftpPacket;
    try {
      packet = decodeTftp(msg);
    } catch (err) {
      this.#stats.dropped++;
      const reason = err instanceof TftpDecodeError ? err.message : String(err);
      this.#limitedLog.hit("malformed", (suppressed) =>
        this.#log.warn({ client, reason, suppressed }, "malformed TFTP packet dropped"),
      );
      return;
    }
    const main = this.#socket;
    if (!main) return;
    if (packet.op === Op.WRQ) {
      this.#limitedLog.hit("write", (suppressed) =>
        this.#log.warn({ client, file: packet.filename, suppressed }, "TFTP write refused"),
      );
      sendError(main, rinfo, ErrorCode.ACCESS_VIOLATION, "This server is read-only");
      return;
    }
    if (packet.op !== Op.RRQ) {
      // ACKs and ERRORs for finished transfers land here; answer nothing (RFC 1350 says an
      // unknown TID gets an error, but only on the transfer's own port).
      this.#stats.dropped++;
      return;
    }
    this.#stats.requests++;
    this.#makeRoom(rinfo.address);
    const fromClient = this.#perClient.get(rinfo.address) ?? 0;
    if (
      this.#transfers.size >= this.#o.maxTransfers ||
      fromClient >= this.#o.maxTransfersPerClient
    ) {
      this.#stats.busy++;
      const active = this.#transfers.size;
      this.#limitedLog.hit("busy", (suppressed) =>
        this.#log.warn(
          { client, file: packet.filename, active, fromClient, suppressed },
          "TFTP request refused: too many transfers",
        ),
      );
      sendError(main, rinfo, ErrorCode.NOT_DEFINED, TFTP_BUSY_MESSAGE);
      return;
    }
    this.#perClient.set(rinfo.address, fromClient + 1);
    const transfer = new Transfer(this.#o, this.#log, this.#limitedLog, rinfo, packet, (event) => {
      this.#transfers.delete(transfer);
      const left = (this.#perClient.get(rinfo.address) ?? 1) - 1;
      if (left > 0) this.#perClient.set(rinfo.address, left);
      else this.#perClient.delete(rinfo.address);
      if (event.stage === "tftp-done") {
        this.#stats.completed++;
        this.#stats.bytes += event.bytes ?? 0;
      } else {
        this.#stats.failed++;
      }
      this.#o.onEvent?.(event);
    });
    this.#transfers.add(transfer);
    transfer.start().catch((err: unknown) => {
      // (A transfer ended while starting, e.g. made way for another, may fail on its socket.)
      if (!transfer.finished) this.#log.error({ err, client }, "tftp transfer crashed");
      transfer.abort("internal error");
    });
  }
}

/** (Method of TftpServer, kept apart for reading.) */
function pickVictim(
  transfers: Iterable<Transfer>,
  address: string,
  atClientCap: boolean,
  minAgeMs: number,
): Transfer | undefined {
  const now = performance.now();
  for (const t of transfers) {
    if (t.confirmed) continue;
    if (atClientCap ? t.address === address : now - t.startedAt >= minAgeMs) return t;
  }
  return undefined;
}

function sendError(socket: Socket, to: RemoteInfo, code: number, message: string): void {
  socket.send(encodeTftp({ op: Op.ERROR, code, message }), to.port, to.address);
}

/** What a transfer reads blocks from: a file (size known) or its netascii form (size unknown). */
interface BlockSource {
  readonly size: number | null;
  read(offset: number, length: number): Promise<Buffer>;
  peek(offset: number, length: number): Buffer | null;
  /** The transfer will not read before `offset` again (so the source may drop those bytes). */
  discardBefore?(offset: number): void;
  close(): Promise<void>;
}

class Transfer {
  readonly #o: ResolvedOptions;
  readonly #log: Logger;
  readonly #limitedLog: RateLimitedLog;
  readonly #peer: RemoteInfo;
  readonly #req: Extract<TftpPacket, { op: 1 | 2 }>;
  readonly #done: (event: TftpTransferEvent) => void;
  readonly #client: string;
  #socket: Socket | null = null;
  #source: BlockSource | null = null;
  #timer: NodeJS.Timeout | null = null;
  #lifetime: NodeJS.Timeout | null = null;
  #deadline = 0;
  #connected = false;
  #finished = false;
  #started = Date.now();
  #blksize = 512;
  #windowsize = 1;
  #timeoutMs = 1000;
  /** Absolute number of the last block acknowledged (0 = none or the OACK). */
  #acked = 0;
  /** Absolute number of the last block sent. */
  #sent = 0;
  /** The last block's number once known (from the size, or a short read for netascii). */
  #lastBlock = Infinity;
  /** Bytes in the last block, once it has been read. */
  #lastBlockBytes = 0;
  #tries = 0;
  #sending = false;
  readonly startedAt = performance.now();
  /** The client has acknowledged something: it is real (not a spoofed request). */
  confirmed = false;

  get finished(): boolean {
    return this.#finished;
  }

  get address(): string {
    return this.#peer.address;
  }

  constructor(
    o: ResolvedOptions,
    log: Logger,
    limitedLog: RateLimitedLog,
    peer: RemoteInfo,
    req: Extract<TftpPacket, { op: 1 | 2 }>,
    done: (event: TftpTransferEvent) => void,
  ) {
    this.#o = o;
    this.#log = log;
    this.#limitedLog = limitedLog;
    this.#peer = peer;
    this.#req = req;
    this.#done = done;
    this.#client = `${peer.address}:${peer.port}`;
  }

  async start(): Promise<void> {
    // However the client paces its ACKs, the transfer (its socket and file) ends by then.
    this.#lifetime = setTimeout(
      () => this.#refuse(ErrorCode.NOT_DEFINED, "Transfer took too long"),
      this.#o.maxTransferMs,
    );
    this.#lifetime.unref();
    const socket = createSocket({ type: "udp4" });
    this.#socket = socket;
    socket.on("error", (err) => this.#fail(`socket error: ${err.message}`, false));
    socket.on("message", (msg, rinfo) => this.#message(msg, rinfo));
    await bindUdp(socket, 0, this.#o.address);
    // Connected to the client's TID: sends skip the per-packet address lookup, and the kernel
    // drops datagrams from any other port (RFC 1350's "unknown TID").
    await new Promise<void>((resolve, reject) => {
      socket.connect(this.#peer.port, this.#peer.address, (err?: Error) =>
        err ? reject(err) : resolve(),
      );
    });
    this.#connected = true;
    if (this.#o.interface) bindToInterface(socket, this.#o.interface);
    const { filename, mode } = this.#req;
    if (mode !== "octet" && mode !== "netascii") {
      return this.#refuse(ErrorCode.ILLEGAL_OPERATION, `Unsupported mode "${mode}"`);
    }
    let file: TftpSource;
    try {
      file = await this.#o.tree.open(filename);
    } catch (err) {
      if (err instanceof TftpError) return this.#refuse(err.code, err.message);
      throw err;
    }
    if (this.#finished) {
      await file.close();
      return;
    }
    // netascii is converted block by block as the transfer goes, never as a whole file.
    this.#source = mode === "netascii" ? new NetasciiSource(file) : file;
    const size = this.#source.size;
    const n = negotiate(this.#req.options, {
      maxBlksize: this.#o.maxBlksize,
      maxWindowsize: this.#o.maxWindowsize,
      defaultTimeoutMs: this.#o.timeoutMs,
      maxTimeoutSeconds: this.#o.maxTimeoutSeconds,
      size,
    });
    this.#blksize = n.blksize;
    this.#windowsize = n.windowsize;
    this.#timeoutMs = n.timeoutMs;
    if (size !== null) this.#lastBlock = Math.floor(size / this.#blksize) + 1;
    this.#o.onEvent?.({
      stage: "tftp-start",
      client: this.#client,
      file: filename,
      bytes: size ?? undefined,
      blksize: this.#blksize,
      windowsize: this.#windowsize,
    });
    this.#log.debug(
      { client: this.#client, file: filename, options: Object.fromEntries(n.accepted) },
      "tftp read",
    );
    if (n.accepted.size > 0) {
      this.#oack = encodeTftp({ op: Op.OACK, options: n.accepted });
      this.#send(this.#oack);
      this.#arm();
    } else {
      await this.#sendWindow();
    }
  }

  #oack: Buffer | null = null;
  #oackAcked = false;

  #send(buf: Buffer): void {
    this.#socket?.send(buf);
  }

  #refuse(code: number, message: string): void {
    if (this.#finished) return;
    if (this.#connected) this.#send(encodeTftp({ op: Op.ERROR, code, message }));
    this.#fail(message, false);
  }

  /**
   * (Re)starts the retransmission clock. One timer per transfer, pushed forward by moving a
   * deadline rather than clearing and re-creating it for every block.
   */
  #arm(): void {
    const backoff = Math.min(
      this.#timeoutMs * Math.min(2 ** this.#tries, 8),
      Math.max(this.#timeoutMs, this.#o.maxRetransmitWaitMs),
    );
    this.#deadline = performance.now() + backoff;
    this.#timer ??= setTimeout(() => this.#tick(), backoff);
  }

  #tick(): void {
    this.#timer = null;
    if (this.#finished) return;
    const left = this.#deadline - performance.now();
    if (left > 1) this.#timer = setTimeout(() => this.#tick(), left);
    else this.#timeout();
  }

  #timeout(): void {
    if (this.#finished) return;
    if (++this.#tries > this.#o.retries) {
      this.#refuse(ErrorCode.NOT_DEFINED, "Timed out waiting for the client");
      return;
    }
    if (this.#oack && !this.#oackAcked) {
      this.#send(this.#oack);
      this.#arm();
      return;
    }
    this.#sent = this.#acked; // resend the whole window after the last acknowledged block
    this.#sendWindow().catch((err: unknown) => this.#fail(String(err), true));
  }

  /** Maps a 16-bit block number from an ACK to the absolute block it most likely means. */
  #absolute(block: number): number {
    const base = this.#acked;
    let candidate = (base & ~0xffff) | block;
    if (candidate < base - 0x8000) candidate += 0x10000;
    else if (candidate > base + 0x8000) candidate -= 0x10000;
    return candidate;
  }

  #message(msg: Buffer, rinfo: RemoteInfo): void {
    // (The socket is connected to the client's TID: the kernel already drops other senders.)
    if (rinfo.address !== this.#peer.address || rinfo.port !== this.#peer.port) return;
    let packet: TftpPacket;
    try {
      packet = decodeTftp(msg);
    } catch {
      this.#limitedLog.hit("malformed-in-transfer", (suppressed) =>
        this.#log.warn(
          { client: this.#client, suppressed },
          "malformed TFTP packet in a transfer dropped",
        ),
      );
      return;
    }
    if (packet.op === Op.ERROR) {
      this.#fail(`client sent error ${packet.code}: ${packet.message}`, false);
      return;
    }
    if (packet.op !== Op.ACK || this.#finished) return;
    this.confirmed = true;
    if (this.#oack && !this.#oackAcked) {
      if (packet.block !== 0) return;
      this.#oackAcked = true; // ACK 0 confirms the OACK: data starts
      this.#tries = 0;
      this.#sendWindow().catch((err: unknown) => this.#fail(String(err), true));
      return;
    }
    const block = this.#absolute(packet.block);
    // Duplicate ACKs are ignored (answering each would double the traffic: the Sorcerer's
    // Apprentice bug); the retransmission timer covers real losses.
    if (block <= this.#acked) return;
    if (block > this.#sent) return; // ACK for something never sent
    this.#acked = block;
    this.#tries = 0;
    this.#source?.discardBefore?.(block * this.#blksize);
    if (block >= this.#lastBlock) {
      this.#finish();
      return;
    }
    if (block < this.#sent) {
      // Part of the window was lost: go on from the block after the one acknowledged.
      this.#sent = block;
    }
    this.#sendWindow().catch((err: unknown) => this.#fail(String(err), true));
  }

  async #sendWindow(): Promise<void> {
    if (this.#sending || this.#finished || !this.#source) return;
    this.#sending = true;
    try {
      const last = Math.min(this.#acked + this.#windowsize, this.#lastBlock);
      while (this.#sent < last && !this.#finished) {
        const block = this.#sent + 1;
        const offset = (block - 1) * this.#blksize;
        // The common case (data already read ahead) stays synchronous: no await per block.
        const data =
          this.#source.peek(offset, this.#blksize) ??
          (await this.#source.read(offset, this.#blksize));
        if (this.#finished) return;
        if (data.length < this.#blksize) {
          // RFC 1350 section 6: a block shorter than blksize (maybe empty) ends the transfer.
          this.#lastBlock = block;
          this.#lastBlockBytes = data.length;
        }
        this.#socket?.send([dataHeader(block), data]);
        this.#sent = block;
      }
      this.#arm();
    } finally {
      this.#sending = false;
    }
  }

  #finish(): void {
    const bytes = (this.#lastBlock - 1) * this.#blksize + this.#lastBlockBytes;
    this.#cleanup(true);
    this.#done({
      stage: "tftp-done",
      client: this.#client,
      file: this.#req.filename,
      bytes,
      ms: Date.now() - this.#started,
      blksize: this.#blksize,
      windowsize: this.#windowsize,
    });
  }

  #fail(error: string, log: boolean): void {
    if (this.#finished) return;
    if (log)
      this.#log.error(
        { client: this.#client, file: this.#req.filename, error },
        "tftp transfer failed",
      );
    this.#cleanup(false);
    this.#done({ stage: "tftp-error", client: this.#client, file: this.#req.filename, error });
  }

  abort(reason: string): void {
    this.#refuse(ErrorCode.NOT_DEFINED, reason);
  }

  #cleanup(linger: boolean): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#lifetime) clearTimeout(this.#lifetime);
    const socket = this.#socket;
    // After a full transfer, keep the socket a moment so the client's last ACK retransmissions
    // do not hit a closed port; a failed one closes at once (a flood of evictions must not pile
    // up lingering sockets beyond the cap).
    const close = (): void => {
      try {
        socket?.close();
      } catch {
        // (already closed)
      }
    };
    if (linger) setTimeout(close, 100).unref();
    else close();
    this.#source?.close().catch(() => undefined);
  }
}
