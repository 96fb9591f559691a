// Serving a file over HTTP the way boot clients and caches want it: HEAD, a single byte Range
// (206/416), strong ETags with If-None-Match (304), Last-Modified and Cache-Control.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import { isErrno } from "../store/local-store.ts";

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
  const etag = `"${options.etag ?? `${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}`}"`;
  res.setHeader("ETag", etag);
  res.setHeader("Last-Modified", st.mtime.toUTCString());
  res.setHeader("Accept-Ranges", "bytes");
  res.setHeader("Cache-Control", options.cacheControl ?? "no-cache");
  res.setHeader("Content-Type", options.contentType ?? "application/octet-stream");
  if (req.headers["if-none-match"] === etag) {
    res.writeHead(304).end();
    return 0;
  }
  const ifRange = req.headers["if-range"];
  const range = ifRange && ifRange !== etag ? null : parseRange(req.headers.range, st.size);
  if (range === "unsatisfiable") {
    res.writeHead(416, { "Content-Range": `bytes */${st.size}` }).end();
    return 0;
  }
  const start = range?.start ?? 0;
  const end = range?.end ?? st.size - 1;
  const length = st.size === 0 ? 0 : end - start + 1;
  res.setHeader("Content-Length", length);
  if (range) res.setHeader("Content-Range", `bytes ${start}-${end}/${st.size}`);
  res.writeHead(range ? 206 : 200);
  if (req.method === "HEAD" || length === 0) {
    res.end();
    return 0;
  }
  await pipeline(createReadStream(path, { start, end, highWaterMark: 256 * 1024 }), res);
  return length;
}
