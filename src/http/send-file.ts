// Serving a file over HTTP the way boot clients and caches want it: HEAD, a single byte Range
// (206/416), strong ETags with If-None-Match (304), Last-Modified and Cache-Control.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BlockDevice } from "../block/block-device.ts";
import { FileDevice } from "../block/file-device.ts";
import { isErrno } from "../lib/atomic-file.ts";
import { BufferPool } from "../lib/buffer-pool.ts";
import { drained } from "../lib/drained.ts";

export interface SendFileOptions {
  contentType?: string;
  cacheControl?: string;
  /** A content hash makes a stable ETag across restarts; else size and mtime are used. */
  etag?: string;
}

/** Parses a single "bytes=a-b" range; null when absent or not one simple range (serve it all). */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null;
  let start: number;
  let end: number;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (end < start && m[2] !== "") return null;
  }
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

/** A body served with ranges: its size, validators and a stream of any byte range. */
export interface RangeSource {
  size: number;
  etag: string;
  lastModified?: Date;
  stream(start: number, end: number): Readable;
  /** The body as a device that reads into given buffers: then sent from reused buffers. */
  device?: BlockDevice;
}

/** Pieces of a device body in flight to one client, and their size. */
const PUMP_PIECE = 1024 * 1024;
const PUMP_AHEAD = 4;
/** Send buffers kept for reuse across responses (each goes back once the socket took it). */
const sendBuffers = new BufferPool(32 * 1024 * 1024, PUMP_PIECE);

/** Sends `path`; resolves with the body bytes sent (0 for HEAD/304), or -1 when not found. */
export async function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  options: SendFileOptions = {},
): Promise<number> {
  // stat before any open: opening a FIFO or device left in a served folder would hold a
  // thread-pool thread until a writer came; only a regular file is ever opened.
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return -1;
    throw err;
  }
  if (!st.isFile()) return -1;
  const source: RangeSource = {
    size: st.size,
    etag: options.etag ?? `${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}`,
    lastModified: st.mtime,
    stream: (start, end) => createReadStream(path, { start, end, highWaterMark: 256 * 1024 }),
  };
  // A body is pumped from the reused send buffers (a read stream takes a new 256 KiB buffer
  // per read: a storm's kernels and initrds were gigabytes of garbage, collected in pauses).
  const body = req.method === "HEAD" ? null : await openBody(path, st.size);
  try {
    return await sendRanges(req, res, body ? { ...source, device: body } : source, options);
  } finally {
    await body?.close();
  }
}

/** The file as a device of the size just seen, or null when it is gone (then streamed). */
async function openBody(path: string, size: number): Promise<BlockDevice | null> {
  const file = await FileDevice.open(path).catch(() => null);
  if (file && file.size !== size) {
    // Changed between the stat and the open: the stream reads what is there.
    await file.close();
    return null;
  }
  return file;
}

/** Sends `source` honouring HEAD, Range, If-Range and If-None-Match; resolves with body bytes. */
export async function sendRanges(
  req: IncomingMessage,
  res: ServerResponse,
  source: RangeSource,
  options: Omit<SendFileOptions, "etag"> = {},
): Promise<number> {
  const size = source.size;
  const etag = `"${source.etag}"`;
  res.setHeader("ETag", etag);
  if (source.lastModified) res.setHeader("Last-Modified", source.lastModified.toUTCString());
  res.setHeader("Accept-Ranges", "bytes");
  res.setHeader("Cache-Control", options.cacheControl ?? "no-cache");
  res.setHeader("Content-Type", options.contentType ?? "application/octet-stream");
  if (req.headers["if-none-match"] === etag) {
    res.writeHead(304).end();
    return 0;
  }
  const ifRange = req.headers["if-range"];
  const range = ifRange && ifRange !== etag ? null : parseRange(req.headers.range, size);
  if (range === "unsatisfiable") {
    res.writeHead(416, { "Content-Range": `bytes */${size}` }).end();
    return 0;
  }
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  const length = size === 0 ? 0 : end - start + 1;
  res.setHeader("Content-Length", length);
  if (range) res.setHeader("Content-Range", `bytes ${start}-${end}/${size}`);
  res.writeHead(range ? 206 : 200);
  if (req.method === "HEAD" || length === 0) {
    res.end();
    return 0;
  }
  if (source.device?.readInto) await pumpDevice(source.device, start, end, res);
  else await pipeline(source.stream(start, end), res);
  return length;
}

/**
 * Sends bytes [start, end] of `device` to `res` in pieces read into reused buffers, a few reads
 * ahead, waiting for the socket to drain: no buffer per piece for the collector, and a piece's
 * buffer is taken again only after the socket has sent it.
 */
async function pumpDevice(
  device: BlockDevice,
  start: number,
  end: number,
  res: ServerResponse,
): Promise<void> {
  const readInto = device.readInto!.bind(device);
  const queue: { buf: Buffer; done: Promise<void> }[] = [];
  let next = start;
  const gone = (): boolean => res.destroyed || res.writableEnded;
  try {
    for (;;) {
      while (queue.length < PUMP_AHEAD && next <= end) {
        const buf = sendBuffers.take(Math.min(PUMP_PIECE, end + 1 - next));
        const done = readInto(next, buf);
        done.catch(() => {}); // surfaced below, in order
        queue.push({ buf, done });
        next += buf.length;
      }
      const piece = queue.shift();
      if (!piece) break;
      try {
        await piece.done;
      } catch (err) {
        sendBuffers.give(piece.buf);
        throw err;
      }
      if (gone()) {
        sendBuffers.give(piece.buf);
        break;
      }
      if (!res.write(piece.buf, () => sendBuffers.give(piece.buf))) await drained(res, 0);
    }
  } catch (err) {
    res.destroy(err as Error);
    throw err;
  } finally {
    // Reads still under way land in their buffers before those are reused.
    for (const { buf, done } of queue)
      void done.then(
        () => sendBuffers.give(buf),
        () => {},
      );
  }
  if (gone()) {
    if (res.destroyed && !res.writableFinished) throw new Error("the client went away");
    return;
  }
  await new Promise<void>((resolve, reject) => {
    res.end((err?: Error | null) => (err ? reject(err) : resolve()));
  });
}

/**
 * Bytes [start, end] of a block device as a stream, read in pieces with a few reads ahead (a
 * network-backed device fetches the next pieces while the client takes this one).
 */
export function deviceStream(
  device: BlockDevice,
  start: number,
  end: number,
  options: { piece?: number; ahead?: number } = {},
): Readable {
  const piece = options.piece ?? 1024 * 1024;
  const ahead = options.ahead ?? 4;
  let next = start;
  const queue: Promise<Buffer>[] = [];
  const fill = (): void => {
    while (queue.length < ahead && next <= end) {
      const length = Math.min(piece - (next % piece), end + 1 - next);
      const p = device.read(next, length);
      p.catch(() => {}); // surfaced in read() below
      queue.push(p);
      next += length;
    }
  };
  return new Readable({
    highWaterMark: piece,
    read() {
      fill();
      const p = queue.shift();
      if (!p) {
        this.push(null);
        return;
      }
      p.then(
        (data) => this.push(data),
        (err: Error) => this.destroy(err),
      );
    },
  });
}
