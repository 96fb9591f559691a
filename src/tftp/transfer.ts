// One TFTP read transfer (RFC 1350) on its own socket (its TID): option negotiation (RFC 2347,
// 2348, 2349, 7440), windows of blocks, retransmission with backoff, a bounded lifetime, and an
// end that reports itself to the server. netascii is converted block by block as it goes.
import { createSocket } from "node:dgram";
import type { RemoteInfo, Socket } from "node:dgram";
import type { Logger } from "../lib/log.ts";
import type { RateLimitedLog } from "../lib/rate-limited-log.ts";
import { bindToInterface, bindUdp } from "../net/interface.ts";
import { NetasciiSource } from "./netascii.ts";
import type { ResolvedTftpOptions, TftpTransferEvent } from "./options.ts";
import { dataHeader, decodeTftp, encodeTftp, ErrorCode, negotiate, Op } from "./protocol.ts";
import type { TftpPacket } from "./protocol.ts";
import { TftpError } from "./tree.ts";
import type { TftpSource } from "./tree.ts";

/** What a transfer reads blocks from: a file (size known) or its netascii form (size unknown). */
interface BlockSource {
  readonly size: number | null;
  read(offset: number, length: number): Promise<Buffer>;
  peek(offset: number, length: number): Buffer | null;
  /** The transfer will not read before `offset` again (so the source may drop those bytes). */
  discardBefore?(offset: number): void;
  close(): Promise<void>;
}

export class Transfer {
  readonly #o: ResolvedTftpOptions;
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
    o: ResolvedTftpOptions,
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
      file = await this.#o.tree.open(filename, { address: this.#peer.address });
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
    // Blocks go out as views of the file's slice: it is refilled in place once no send that
    // points into it is still queued (the kernel has copied the rest).
    // (A closed socket has no queue to ask: a finished transfer reads nothing more anyway.)
    if (mode === "octet")
      file.reuseWhen?.(() => !this.#finished && this.#socket?.getSendQueueCount() === 0);
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
    // The hot path of a lock-step transfer, one per block: a 4-byte ACK, read in place.
    if (msg.length === 4 && msg[0] === 0 && msg[1] === Op.ACK) {
      this.#ack(msg.readUInt16BE(2));
      return;
    }
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
    if (packet.op === Op.ACK) this.#ack(packet.block);
  }

  #ack(number: number): void {
    if (this.#finished) return;
    this.confirmed = true;
    if (this.#oack && !this.#oackAcked) {
      if (number !== 0) return;
      this.#oackAcked = true; // ACK 0 confirms the OACK: data starts
      this.#tries = 0;
      this.#pump();
      return;
    }
    const block = this.#absolute(number);
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
    this.#pump();
  }

  /**
   * Sends the window's blocks the source holds already (read ahead) without leaving this call:
   * no promise per ACK. The first block it does not hold goes the async way (#sendWindow).
   */
  #pump(): void {
    if (this.#sending || this.#finished || !this.#source) return;
    const last = Math.min(this.#acked + this.#windowsize, this.#lastBlock);
    while (this.#sent < last) {
      const block = this.#sent + 1;
      const data = this.#source.peek((block - 1) * this.#blksize, this.#blksize);
      if (!data) {
        this.#sendWindow().catch((err: unknown) => this.#fail(String(err), true));
        return;
      }
      this.#sendBlock(block, data);
    }
    this.#arm();
  }

  #sendBlock(block: number, data: Buffer): void {
    if (data.length < this.#blksize) {
      // RFC 1350 section 6: a block shorter than blksize (maybe empty) ends the transfer.
      this.#lastBlock = block;
      this.#lastBlockBytes = data.length;
    }
    this.#socket?.send([dataHeader(block), data]);
    this.#sent = block;
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
        this.#sendBlock(block, data);
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
