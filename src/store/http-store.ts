// A store served by any static web server, CDN or object store, read over pooled keep-alive
// connections (undici) with retries and exponential backoff. undici (~30 MB of a process's
// memory) is loaded on the first request: `pack` and other local-only commands never pay for it.
import type { Agent, Dispatcher, request } from "undici";
import { BodyTooLargeError, FetchError, NotFoundError } from "./errors.ts";
import { DEFAULT_MAX_READ_BYTES } from "./limits.ts";
import { RetriesExhaustedError, RetryableError, withBackoff } from "./retry.ts";
import type { ReadOptions, StoreReader } from "./store.ts";

export interface HttpStoreOptions {
  /** Connections kept open to the origin. */
  connections?: number;
  /** Attempts per request, the first included. */
  attempts?: number;
  /** Delay before the first retry, doubled (with jitter) for each further one. */
  backoffMs?: number;
  /** Time allowed for response headers, and between body bytes. */
  timeoutMs?: number;
}

export const DEFAULT_HTTP_STORE_OPTIONS: Required<HttpStoreOptions> = Object.freeze({
  connections: 16,
  attempts: 4,
  backoffMs: 100,
  timeoutMs: 30_000,
});

/** Statuses worth another try: the origin or a proxy is overloaded or restarting. */
function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * Closes a response body that is not wanted (too large, past its range). Destroying an undici
 * body emits "request aborted" as an error event: with nobody listening, that would take the
 * whole process down, so the error is expected here and dropped.
 */
function discard(body: NodeJS.ReadableStream & { destroy(): void }): void {
  body.on("error", () => undefined);
  body.destroy();
}

type RequestOptions = { method: "GET" | "HEAD"; headers?: Record<string, string> };

export class HttpStoreReader implements StoreReader {
  readonly location: string;
  #client: Promise<{ agent: Agent; request: typeof request }> | null = null;
  readonly #options: Required<HttpStoreOptions>;

  constructor(url: string, options: HttpStoreOptions = {}) {
    this.location = url.endsWith("/") ? url : `${url}/`;
    this.#options = { ...DEFAULT_HTTP_STORE_OPTIONS, ...options };
  }

  /** One request on the reader's pooled connections (made on the first). */
  async #request(url: string, options: RequestOptions): Promise<Dispatcher.ResponseData> {
    this.#client ??= import("undici").then(({ Agent, request }) => ({
      request,
      agent: new Agent({
        connections: this.#options.connections,
        keepAliveTimeout: 30_000,
        headersTimeout: this.#options.timeoutMs,
        bodyTimeout: this.#options.timeoutMs,
      }),
    }));
    const { agent, request } = await this.#client;
    return request(url, { ...options, dispatcher: agent });
  }

  describe(path: string): string {
    return new URL(path, this.location).href;
  }

  async read(path: string, options: ReadOptions = {}): Promise<Buffer> {
    const body = await this.#fetch("GET", path, options);
    if (body === null) throw new NotFoundError(this.describe(path));
    return body;
  }

  async size(path: string): Promise<number | null> {
    const url = this.describe(path);
    const res = await this.#withRetries("HEAD", url, async () => {
      const r = await this.#request(url, { method: "HEAD" });
      await r.body.dump();
      return r;
    });
    if (res.statusCode === 404 || res.statusCode === 410) return null;
    if (res.statusCode !== 200)
      throw new FetchError(`HEAD ${url} answered HTTP ${res.statusCode}, expected 200`);
    const length = Number(res.headers["content-length"]);
    if (!Number.isSafeInteger(length)) {
      throw new FetchError(`HEAD ${url}: the server sent no Content-Length`);
    }
    return length;
  }

  async *readRange(path: string, offset: number, length: number): AsyncIterable<Buffer> {
    if (length === 0) return;
    const url = this.describe(path);
    const range = `bytes=${offset}-${offset + length - 1}`;
    // Retries cover getting the response; a body cut short is the caller's to resume.
    const res = await this.#withRetries("GET", url, async () => {
      const r = await this.#request(url, { method: "GET", headers: { range } });
      if (r.statusCode !== 206 && r.statusCode !== 200) await r.body.dump();
      return r;
    });
    if (res.statusCode === 404 || res.statusCode === 410) throw new NotFoundError(url);
    const whole = res.statusCode === 200;
    if (res.statusCode !== 206 && !whole) {
      throw new FetchError(`GET ${url} (${range}) answered HTTP ${res.statusCode}, expected 206`);
    }
    // A server without Range support sends the whole file: skip to the offset.
    let skip = whole ? offset : 0;
    let left = length;
    for await (const part of res.body as AsyncIterable<Buffer>) {
      if (left === 0) break; // a 206 running past its range: the rest is not read
      let piece = part;
      if (skip > 0) {
        const n = Math.min(skip, piece.length);
        skip -= n;
        piece = piece.subarray(n);
      }
      if (piece.length > left) piece = piece.subarray(0, left);
      left -= piece.length;
      if (piece.length > 0) yield piece;
      if (left === 0 && whole) break; // the rest of a whole file is not wanted
    }
    if (!res.body.destroyed && !res.body.readableEnded) discard(res.body);
    if (left > 0) throw new FetchError(`GET ${url} (${range}) ended ${left} bytes short`);
  }

  async #fetch(method: "GET", path: string, options: ReadOptions): Promise<Buffer | null> {
    const url = this.describe(path);
    const limit = options.maxBytes ?? DEFAULT_MAX_READ_BYTES;
    const tooLarge = (): BodyTooLargeError => new BodyTooLargeError(url, limit, options.what);
    return this.#withRetries(method, url, async () => {
      const r = await this.#request(url, { method });
      if (r.statusCode === 404 || r.statusCode === 410) {
        await r.body.dump();
        return null;
      }
      if (r.statusCode !== 200) {
        await r.body.dump();
        return { statusCode: r.statusCode };
      }
      // Refused up front when the server says it is too large, else as soon as it passes the
      // limit: the connection is closed, the rest is never read.
      const declared = Number(r.headers["content-length"]);
      if (Number.isSafeInteger(declared) && declared > limit) {
        discard(r.body);
        throw tooLarge();
      }
      const parts: Buffer[] = [];
      let size = 0;
      for await (const part of r.body as AsyncIterable<Buffer>) {
        size += part.length;
        if (size > limit) {
          discard(r.body);
          throw tooLarge();
        }
        parts.push(part);
      }
      return Buffer.concat(parts, size);
    }).then((res) => {
      if (res === null || Buffer.isBuffer(res)) return res;
      throw new FetchError(`GET ${url} answered HTTP ${res.statusCode}, expected 200`);
    });
  }

  /** Runs `attempt` with backoff while it fails or answers a retryable status. */
  async #withRetries<T>(method: string, url: string, attempt: () => Promise<T>): Promise<T> {
    try {
      return await withBackoff(
        async () => {
          const result = await attempt();
          const status = statusOf(result);
          if (status !== null && isRetryableStatus(status))
            throw new RetryableError(`HTTP ${status}`);
          return result;
        },
        { ...this.#options, isFinal: (err) => err instanceof BodyTooLargeError },
      );
    } catch (err) {
      if (err instanceof RetriesExhaustedError)
        throw new FetchError(`${method} ${url} ${err.message}`);
      throw err;
    }
  }

  async close(): Promise<void> {
    const client = await this.#client;
    await client?.agent.close();
  }
}

function statusOf(result: unknown): number | null {
  if (result !== null && typeof result === "object" && "statusCode" in result) {
    return (result as { statusCode: number }).statusCode;
  }
  return null;
}
