// What `inetboot doctor` reports: checks as data (a name, an outcome, what was seen, the fix),
// and the bounded tools every network check shares — one HTTP probe with a timeout and a body
// cap, and a runner that keeps a fixed number of probes in flight.
import type { Agent, request } from "undici";

export type Outcome = "ok" | "warn" | "fail";

export interface Check {
  /** Stable, for scripts: "config", "port tftp 69/udp", "entry hello kernel", … */
  name: string;
  outcome: Outcome;
  /** What was seen. */
  detail: string;
  /** What to do about it (set when the outcome is not ok). */
  fix?: string;
}

export const ok = (name: string, detail: string): Check => ({ name, outcome: "ok", detail });
export const warn = (name: string, detail: string, fix: string): Check => ({
  name,
  outcome: "warn",
  detail,
  fix,
});
export const fail = (name: string, detail: string, fix: string): Check => ({
  name,
  outcome: "fail",
  detail,
  fix,
});

/** Time one probe may take, headers and body together. */
export const PROBE_TIMEOUT_MS = 3000;
/** Bytes of a probed body read at most (a ranged GET asks for one). */
export const MAX_PROBE_BODY_BYTES = 64 * 1024;
/** Probes in flight at once. */
export const PROBE_CONCURRENCY = 4;
/** URLs probed at most per run; the rest are named as not checked. */
export const MAX_URL_PROBES = 32;

export interface ProbeResult {
  url: string;
  /** HTTP status, or null when nothing answered. */
  status: number | null;
  /** Why nothing answered (refused, timed out, …). */
  error?: string;
  /** The server's clock (its Date header), when it sent one. */
  date?: Date;
  /** Where a redirect points (not followed). */
  location?: string;
  body?: string;
  /** Local time half-way through the request, to compare `date` with. */
  at: number;
}

export interface ProbeOptions {
  method?: "HEAD" | "GET";
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** Read the body (at most this many bytes) into `body`. */
  readBody?: number;
}

/** Makes bounded HTTP requests over one agent; close() lets the process exit at once. */
export class Prober {
  /** undici, loaded on the first probe. */
  #client: Promise<{ agent: Agent; request: typeof request }> | null = null;
  /** Every Date header seen, for the clock check. */
  readonly dates: { url: string; date: Date; at: number }[] = [];

  async probe(url: string, options: ProbeOptions = {}): Promise<ProbeResult> {
    const timeoutMs = options.timeoutMs ?? PROBE_TIMEOUT_MS;
    const start = Date.now();
    try {
      this.#client ??= import("undici").then(({ Agent, request }) => ({
        request,
        agent: new Agent({ connections: PROBE_CONCURRENCY, keepAliveTimeout: 1000 }),
      }));
      const { agent, request } = await this.#client;
      const res = await request(url, {
        method: options.method ?? "HEAD",
        headers: options.headers,
        dispatcher: agent,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      });
      const at = Math.round((start + Date.now()) / 2);
      const header = (k: string): string | undefined => {
        const v = res.headers[k];
        return Array.isArray(v) ? v[0] : v;
      };
      const body = await readCapped(res.body, options.readBody ?? 0);
      const dateText = header("date");
      const date = dateText ? new Date(dateText) : undefined;
      if (date && !Number.isNaN(date.getTime())) this.dates.push({ url, date, at });
      return {
        url,
        status: res.statusCode,
        at,
        ...(date && !Number.isNaN(date.getTime()) ? { date } : {}),
        ...(header("location") ? { location: header("location") } : {}),
        ...(options.readBody ? { body } : {}),
      };
    } catch (err) {
      return { url, status: null, error: describeError(err, timeoutMs), at: Date.now() };
    }
  }

  /**
   * Whether `url` answers: HEAD first; a server that refuses HEAD (405, 501, or 403 as some
   * object stores do) gets a GET of its first byte.
   */
  async reachable(url: string): Promise<ProbeResult> {
    const head = await this.probe(url);
    if (head.status !== 405 && head.status !== 501 && head.status !== 403) return head;
    return this.probe(url, { method: "GET", headers: { Range: "bytes=0-0" } });
  }

  async close(): Promise<void> {
    const client = await this.#client;
    await client?.agent.close();
  }
}

/** Up to `max` bytes of a body as text; the rest is not read (the stream is destroyed). */
async function readCapped(
  body: AsyncIterable<Buffer> & { destroy(): void; on(e: "error", f: () => void): unknown },
  max: number,
): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  body.on("error", () => undefined);
  if (max > 0) {
    for await (const chunk of body) {
      parts.push(chunk);
      size += chunk.length;
      if (size >= max) break;
    }
  }
  body.destroy();
  return Buffer.concat(parts).subarray(0, max).toString("utf8");
}

function describeError(err: unknown, timeoutMs: number): string {
  const e = err as Error & { code?: string; cause?: { code?: string } };
  const code = e.code ?? e.cause?.code;
  if (e.name === "TimeoutError" || /timeout/i.test(code ?? "") || /aborted/i.test(e.message))
    return `no answer within ${timeoutMs / 1000} s`;
  if (code === "ECONNREFUSED") return "connection refused";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "host name does not resolve";
  return code ? `${code} (${e.message})` : e.message;
}

/** Runs `work` over `items` with at most `limit` in flight; results in the items' order. */
export async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await work(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
