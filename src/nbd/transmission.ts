// The transmission phase of one NBD connection (NBD protocol "Transmission phase"): requests
// read in order, served concurrently and answered out of order (simple or structured replies);
// the bytes they hold are capped per connection and per server, so a slow client is
// back-pressured instead of buffered for.
import type { Socket } from "node:net";
import { dataExtent, OutOfRangeError, ReadOnlyError } from "../block/block-device.ts";
import type { BlockDevice } from "../block/block-device.ts";
import type { Logger } from "../lib/log.ts";
import type { ByteQueue } from "./byte-queue.ts";
import type { ConnectionHost } from "./connection-host.ts";
import { drained } from "../lib/drained.ts";
import { InFlightBudget } from "./in-flight.ts";
import { BASE_ALLOCATION_ID } from "./negotiation.ts";
import type { NbdExport } from "./options.ts";
import * as P from "./protocol.ts";
import { countRequest } from "./stats.ts";

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

/** Requests already received that are taken in a row before the connection yields a turn. */
const MAX_AT_ONCE = 64;

export class Transmission {
  readonly #host: ConnectionHost;
  readonly #socket: Socket;
  readonly #in: ByteQueue;
  readonly #log: Logger;
  readonly #structured: boolean;
  readonly #baseAllocation: boolean;
  /** This connection's bytes in flight (the server's are counted by the host as well). */
  readonly #budget: InFlightBudget;
  readonly #pending = new Set<Promise<void>>();
  /** Replies queued this turn of the event loop go out together, in one writev. */
  #corked = false;
  readonly #uncork = (): void => {
    this.#corked = false;
    this.#socket.uncork();
  };

  constructor(
    host: ConnectionHost,
    connection: { socket: Socket; input: ByteQueue; log: Logger },
    negotiated: { structured: boolean; baseAllocation: boolean },
  ) {
    this.#host = host;
    this.#socket = connection.socket;
    this.#in = connection.input;
    this.#log = connection.log;
    this.#structured = negotiated.structured;
    this.#baseAllocation = negotiated.baseAllocation;
    const limit = host.limits.maxInFlightPerConnection;
    const socket = this.#socket;
    this.#budget = new InFlightBudget(limit, {
      congested: () => socket.writableLength > limit,
      onRelief: (wake) => socket.once("drain", wake),
    });
  }

  /** Resolves once every request taken so far is answered (or failed). */
  async settled(): Promise<void> {
    await Promise.allSettled(this.#pending);
  }

  /** Serves requests on `e` until the client disconnects (NBD_CMD_DISC or the socket closes). */
  async run(e: NbdExport): Promise<void> {
    const max = this.#host.limits.maxRequestBytes;
    const backlog = this.#host.limits.maxInFlightPerConnection;
    let atOnce = 0;
    for (;;) {
      // Replies of requests that hold no data (errors, FLUSH...) are bounded here too.
      if (this.#socket.writableLength > backlog) await drained(this.#socket, backlog);
      let header = this.#in.takeNow(P.REQUEST_HEADER_SIZE);
      if (!header) {
        atOnce = 0;
        header = await this.#in.read(P.REQUEST_HEADER_SIZE);
      } else if (++atOnce === MAX_AT_ONCE) {
        // A client that keeps many requests queued lets the other connections take turns.
        atOnce = 0;
        await new Promise(setImmediate);
      }
      const req = P.decodeRequest(header);
      if (req.type === P.NBD_CMD_DISC) {
        this.#log.debug("nbd client disconnected");
        return;
      }
      if (req.type === P.NBD_CMD_READ && this.#readNow(e.device, req)) continue;
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

  /**
   * A read the device answers at once (a warm cache): no promise, no wait for the budget. Its
   * reply goes straight to the socket, whose unsent bytes the loop bounds before each request.
   */
  #readNow(device: BlockDevice, req: P.Request): boolean {
    const { offset, length } = req;
    if (!device.readIntoNow || length === 0 || length > this.#host.limits.maxRequestBytes)
      return false;
    if (offset + length > device.size) return false;
    const buffers = this.#host.buffers;
    const data = buffers.take(length);
    let done = false;
    try {
      done = device.readIntoNow(offset, data);
    } catch {
      // The read is tried again the usual way, which reports what went wrong.
    }
    if (!done) {
      buffers.give(data);
      return false;
    }
    countRequest(this.#host.stats, P.NBD_CMD_READ);
    this.#sendData(req, data, () => buffers.give(data));
    return true;
  }

  /** A READ's reply: its header, then `data` (`sent` once the socket is done with it). */
  #sendData(req: P.Request, data: Buffer, sent?: () => void): void {
    this.#host.stats.bytesRead += data.length;
    const head = this.#structured
      ? P.encodeOffsetDataHeader(req.handle, req.offset, data.length)
      : P.encodeSimpleReply(req.handle, 0);
    this.#send(head, data, sent);
  }

  async #acquire(bytes: number): Promise<void> {
    await this.#budget.acquire(bytes);
    await this.#host.acquire(bytes);
  }

  #release(bytes: number): void {
    this.#budget.release(bytes);
    this.#host.release(bytes);
  }

  #sendError(req: P.Request, errno: number, message: string): void {
    this.#host.stats.errors++;
    this.#log.debug(
      { type: req.type, offset: req.offset, length: req.length, errno, message },
      "nbd request refused",
    );
    if (this.#structured) this.#send(P.encodeStructuredError(req.handle, errno, message));
    else this.#send(P.encodeSimpleReply(req.handle, errno));
  }

  /**
   * Queues a reply's parts. The socket stays corked until the event loop's check phase, so the
   * replies finished in one turn (the reads a QD16 client keeps in flight) leave in one writev.
   */
  #send(head: Buffer, data?: Buffer, sent?: () => void): void {
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      setImmediate(this.#uncork);
    }
    this.#socket.write(head);
    if (data) this.#socket.write(data, sent);
  }

  #sendOk(req: P.Request): void {
    if (this.#structured) {
      this.#send(
        P.encodeStructuredHeader(req.handle, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, 0),
      );
    } else this.#send(P.encodeSimpleReply(req.handle, 0));
  }

  async #serve(device: BlockDevice, req: P.Request, payload: Buffer | null): Promise<void> {
    const { offset, length } = req;
    const inRange = offset + length <= device.size;
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    const stats = this.#host.stats;
    countRequest(stats, req.type);
    try {
      switch (req.type) {
        case P.NBD_CMD_READ: {
          if (length > this.#host.limits.maxRequestBytes) {
            return this.#sendError(
              req,
              P.NBD_EOVERFLOW,
              `read of ${length} bytes exceeds the maximum`,
            );
          }
          if (!inRange)
            return this.#sendError(req, P.NBD_EINVAL, `read beyond the end of the export`);
          let data: Buffer;
          let pooled = false;
          if (length === 0) data = Buffer.alloc(0);
          else if (device.readInto) {
            data = this.#host.buffers.take(length);
            try {
              await device.readInto(offset, data);
            } catch (err) {
              this.#host.buffers.give(data);
              throw err;
            }
            pooled = true;
          } else data = await device.read(offset, length);
          this.#sendData(req, data, pooled ? () => this.#host.buffers.give(data) : undefined);
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
            const step = Math.min(length, this.#host.limits.maxRequestBytes);
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
          await device.read(offset, Math.min(length, this.#host.limits.maxRequestBytes));
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
    this.#send(
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
