// Serving a file over HTTP the way boot clients and caches want it: HEAD, a single byte Range
// (206/416), strong ETags with If-None-Match (304), Last-Modified and Cache-Control.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BlockDevice } from "../block/block-device.ts";
import { isErrno } from "../lib/atomic-file.ts";

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
}

/** Sends `path`; resolves with the body bytes sent (0 for HEAD/304), or -1 when not found. */
export async function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  options: SendFileOptions = {},
): Promise<number> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return -1;
    throw err;
  }
  if (!st.isFile()) return -1;
  return sendRanges(
    req,
    res,
    {
      size: st.size,
      etag: options.etag ?? `${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}`,
      lastModified: st.mtime,
      stream: (start, end) => createReadStream(path, { start, end, highWaterMark: 256 * 1024 }),
    },
    options,
  );
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
  await pipeline(source.stream(start, end), res);
  return length;
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
