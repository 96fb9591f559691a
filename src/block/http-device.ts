// Any raw image or ISO on any web server as a read-only block device, read by HTTP Range
// requests (the httpfs case): nothing is downloaded that is not read. undici is loaded on the
// first open, not by every command that links this file.
import type { Agent, request } from "undici";
import { BlockIoError, checkRange, dataExtent, ReadOnlyError } from "./block-device.ts";
import type { BlockDevice, Extent } from "./block-device.ts";
import { RetriesExhaustedError, RetryableError, withBackoff } from "../store/retry.ts";

/** Range reads: four tries, 100 ms backoff doubling. */
const RANGE_RETRY = {
  attempts: 4,
  backoffMs: 100,
  isFinal: (err: unknown) => err instanceof BlockIoError,
};

export class RangeUnsupportedError extends Error {
  readonly code = "ERR_RANGE_UNSUPPORTED";
}

export class HttpDevice implements BlockDevice {
  readonly url: string;
  readonly size: number;
  readonly readOnly = true;
  /**
   * The content's ETag (strong) or Last-Modified, when the server gave one: every range is asked
   * with If-Range, so a file replaced on the server fails loudly instead of mixing versions.
   */
  readonly validator: string | null;
  readonly #agent: Agent;
  readonly #request: typeof request;
  requests = 0;
  bytesFetched = 0;

  private constructor(
    url: string,
    size: number,
    validator: string | null,
    client: { agent: Agent; request: typeof request },
  ) {
    this.url = url;
    this.size = size;
    this.validator = validator;
    this.#agent = client.agent;
    this.#request = client.request;
  }

  static async open(
    url: string,
    options: { connections?: number; timeoutMs?: number } = {},
  ): Promise<HttpDevice> {
    const { Agent, request } = await import("undici");
    const agent = new Agent({
      connections: options.connections ?? 8,
      headersTimeout: options.timeoutMs ?? 30_000,
      bodyTimeout: options.timeoutMs ?? 30_000,
    });
    try {
      // A one-byte range both finds the size (Content-Range) and proves Range support.
      const res = await request(url, { dispatcher: agent, headers: { range: "bytes=0-0" } });
      await res.body.dump();
      if (res.statusCode === 200) {
        throw new RangeUnsupportedError(
          `${url} ignores Range requests (answered 200 to "Range: bytes=0-0"); serve it with a server that supports byte ranges, or pack it into a store`,
        );
      }
      if (res.statusCode !== 206)
        throw new BlockIoError(
          `GET ${url} answered HTTP ${res.statusCode}, expected 206 Partial Content`,
        );
      const m = /\/(\d+)$/.exec(String(res.headers["content-range"] ?? ""));
      if (!m)
        throw new BlockIoError(
          `${url} sent no usable Content-Range header ("${String(res.headers["content-range"])}")`,
        );
      const etag = String(res.headers.etag ?? "");
      const lastModified = String(res.headers["last-modified"] ?? "");
      // A weak ETag cannot be used with If-Range.
      const validator = etag && !etag.startsWith("W/") ? etag : lastModified || null;
      return new HttpDevice(url, Number(m[1]), validator, { agent, request });
    } catch (err) {
      await agent.close();
      if (err instanceof RangeUnsupportedError || err instanceof BlockIoError) throw err;
      throw new BlockIoError(`Cannot open ${url}: ${(err as Error).message}`);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    if (length === 0) return Buffer.alloc(0);
    const range = `bytes=${offset}-${offset + length - 1}`;
    try {
      return await withBackoff(async () => {
        this.requests++;
        const headers: Record<string, string> = { range };
        if (this.validator) headers["if-range"] = this.validator;
        const res = await this.#request(this.url, { dispatcher: this.#agent, headers });
        if (res.statusCode === 200 && this.validator) {
          await res.body.dump();
          throw new BlockIoError(
            `the file changed on the server since it was opened (${this.validator} no longer matches); open it again`,
          );
        }
        if (res.statusCode !== 206) {
          await res.body.dump();
          // A client error will not mend itself: give up at once.
          if (res.statusCode < 500) throw new BlockIoError(`HTTP ${res.statusCode}`);
          throw new RetryableError(`HTTP ${res.statusCode}`);
        }
        const data = Buffer.from(await res.body.arrayBuffer());
        this.bytesFetched += data.length;
        if (data.length !== length) {
          throw new RetryableError(`${data.length} bytes for a ${length}-byte range`);
        }
        return data;
      }, RANGE_RETRY);
    } catch (err) {
      const problem = err instanceof RetriesExhaustedError ? err.problem : (err as Error).message;
      throw new BlockIoError(`GET ${this.url} ${range} failed: ${problem}`);
    }
  }

  write(): Promise<void> {
    return Promise.reject(
      new ReadOnlyError("An HTTP image is read-only; attach it with --cow FILE to write"),
    );
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return Promise.resolve(dataExtent(offset, length));
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}
