// A read-only TFTP server: RFC 1350 with option negotiation (2347), blksize (2348), timeout and
// tsize (2349) and windowsize (7440). Each transfer has its own socket (its TID), retransmits
// with backoff, and ends by itself; writes and paths outside the tree get an error packet.
// Bounded against floods (requests can be spoofed): concurrent transfers in total and per client
// address, the timeout a client may ask for, the retransmission wait and a transfer's lifetime.
// This file admits requests and keeps the caps; one transfer is transfer.ts.
import { createSocket } from "node:dgram";
import type { RemoteInfo, Socket } from "node:dgram";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { stripUndefined } from "../lib/options.ts";
import { RateLimitedLog } from "../lib/rate-limited-log.ts";
import { bindToInterface, bindUdp } from "../net/interface.ts";
import { DEFAULT_TFTP_OPTIONS, TFTP_BUSY_MESSAGE } from "./options.ts";
import type { ResolvedTftpOptions, TftpServerOptions } from "./options.ts";
import { decodeTftp, encodeTftp, ErrorCode, Op, TftpDecodeError } from "./protocol.ts";
import type { TftpPacket } from "./protocol.ts";
import { Transfer } from "./transfer.ts";

// (Kept importable from here, where they were first defined.)
export {
  DEFAULT_TFTP_MAX_RETRANSMIT_WAIT_MS,
  DEFAULT_TFTP_MAX_TRANSFER_MS,
  DEFAULT_TFTP_MAX_TRANSFERS,
  DEFAULT_TFTP_MAX_TRANSFERS_PER_CLIENT,
  DEFAULT_TFTP_OPTIONS,
  TFTP_BUSY_MESSAGE,
} from "./options.ts";
export type { TftpServerOptions, TftpTransferEvent } from "./options.ts";

export interface TftpStats {
  requests: number;
  completed: number;
  failed: number;
  bytes: number;
  dropped: number;
  /** Requests answered "server busy" (a cap was reached, the queue full). */
  busy: number;
  /** Requests that waited for a slot (the cap on transfers was reached). */
  queued: number;
  active: number;
  /** Requests waiting now. */
  waiting: number;
}

type RrqPacket = Extract<TftpPacket, { op: 1 | 2 }>;

export class TftpServer {
  readonly #o: ResolvedTftpOptions;
  readonly #log: Logger;
  #socket: Socket | null = null;
  readonly #transfers = new Set<Transfer>();
  /** Transfers at once per client address. */
  readonly #perClient = new Map<string, number>();
  readonly #limitedLog = new RateLimitedLog();
  /** Requests waiting for a transfer slot, oldest first. */
  readonly #queue: { rinfo: RemoteInfo; packet: RrqPacket; at: number }[] = [];
  /** Queued requests per client address (one host may not fill the queue). */
  readonly #queuedFrom = new Map<string, number>();
  /** The queued requests' "address:port" (a resent request is found without a scan). */
  readonly #queuedKeys = new Set<string>();
  #stats = { requests: 0, completed: 0, failed: 0, bytes: 0, dropped: 0, busy: 0, queued: 0 };

  constructor(options: TftpServerOptions) {
    this.#o = { ...DEFAULT_TFTP_OPTIONS, ...stripUndefined(options), tree: options.tree };
    this.#log = options.logger ?? silentLogger;
  }

  get stats(): TftpStats {
    return { ...this.#stats, active: this.#transfers.size, waiting: this.#queue.length };
  }

  get port(): number {
    return this.#socket?.address().port ?? 0;
  }

  async start(): Promise<void> {
    const socket = createSocket({ type: "udp4", reuseAddr: true });
    socket.on("message", (msg, rinfo) => this.#request(msg, rinfo));
    socket.on("error", (err) => this.#log.error({ err }, "tftp socket error"));
    await bindUdp(socket, this.#o.port, this.#o.address);
    // A lab powering on sends its requests in one burst (the kernel caps it at rmem_max).
    socket.setRecvBufferSize(4 * 1024 * 1024);
    const notTied = this.#o.interface ? bindToInterface(socket, this.#o.interface) : null;
    if (notTied) {
      this.#log.warn(
        { interface: this.#o.interface, reason: notTied },
        "cannot restrict TFTP to one interface",
      );
    }
    this.#socket = socket;
  }

  async stop(): Promise<void> {
    this.#queue.length = 0;
    this.#queuedFrom.clear();
    this.#queuedKeys.clear();
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
    if (fromClient >= this.#o.maxTransfersPerClient) return this.#busy(rinfo, packet.filename);
    // Waiting requests go first (a slot a victim freed is theirs).
    if (this.#transfers.size >= this.#o.maxTransfers || this.#queue.length > 0) {
      return this.#enqueue(rinfo, packet);
    }
    this.#startTransfer(rinfo, packet);
  }

  /**
   * At the cap on transfers a request waits for a slot instead of being refused: firmware ends
   * its boot on an ERROR, so a lab powering on at once would mostly fail. Bounded in count and
   * wait; a retransmitted request keeps its place.
   */
  #enqueue(rinfo: RemoteInfo, packet: RrqPacket): void {
    const key = `${rinfo.address}:${rinfo.port}`;
    if (this.#queuedKeys.has(key)) return;
    const fromClient = this.#queuedFrom.get(rinfo.address) ?? 0;
    if (this.#queue.length >= this.#o.maxQueued || fromClient >= this.#o.maxTransfersPerClient) {
      return this.#busy(rinfo, packet.filename);
    }
    this.#queue.push({ rinfo, packet, at: performance.now() });
    this.#queuedFrom.set(rinfo.address, fromClient + 1);
    this.#queuedKeys.add(key);
    this.#stats.queued++;
  }

  /** Starts queued requests while slots are free; ones that waited too long are dropped. */
  #drain(): void {
    while (this.#transfers.size < this.#o.maxTransfers && this.#queue.length > 0) {
      const q = this.#queue.shift()!;
      this.#queuedKeys.delete(`${q.rinfo.address}:${q.rinfo.port}`);
      const left = (this.#queuedFrom.get(q.rinfo.address) ?? 1) - 1;
      if (left > 0) this.#queuedFrom.set(q.rinfo.address, left);
      else this.#queuedFrom.delete(q.rinfo.address);
      if (performance.now() - q.at > this.#o.queueWaitMs) {
        this.#stats.dropped++;
        continue;
      }
      if ((this.#perClient.get(q.rinfo.address) ?? 0) >= this.#o.maxTransfersPerClient) {
        this.#busy(q.rinfo, q.packet.filename);
        continue;
      }
      this.#startTransfer(q.rinfo, q.packet);
    }
  }

  #busy(rinfo: RemoteInfo, file: string): void {
    const main = this.#socket;
    if (!main) return;
    this.#stats.busy++;
    const active = this.#transfers.size;
    const fromClient = this.#perClient.get(rinfo.address) ?? 0;
    const client = `${rinfo.address}:${rinfo.port}`;
    this.#limitedLog.hit("busy", (suppressed) =>
      this.#log.warn(
        { client, file, active, queued: this.#queue.length, fromClient, suppressed },
        "TFTP request refused: too many transfers",
      ),
    );
    sendError(main, rinfo, ErrorCode.NOT_DEFINED, TFTP_BUSY_MESSAGE);
  }

  #startTransfer(rinfo: RemoteInfo, packet: RrqPacket): void {
    const client = `${rinfo.address}:${rinfo.port}`;
    this.#perClient.set(rinfo.address, (this.#perClient.get(rinfo.address) ?? 0) + 1);
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
      this.#drain();
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
