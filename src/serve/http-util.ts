// Small pieces the boot server's HTTP handlers share: errors with a status, plain replies,
// the client's address and MAC query parameters.
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { formatMac, parseMac } from "../dhcp/packet.ts";
import { INLINE_TEXTS } from "./ui/html.ts";

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** A whole reply that is never cached; pages get the security headers of htmlHeaders(). */
export function send(res: ServerResponse, status: number, body: string, type: string): void {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    ...(type.startsWith("text/html") ? htmlHeaders(body) : {}),
  });
  res.end(body);
}

const sha256 = (text: string): string =>
  `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

/**
 * A page's Content-Security-Policy: nothing loads from elsewhere, only the inline scripts and
 * styles the page renderer put there from code (INLINE_TEXTS, by hash) run, no framing
 * (clickjacking of the write forms), forms post only back here.
 */
export function htmlHeaders(body: string): Record<string, string> {
  const hashes = (tag: string): string =>
    [...INLINE_TEXTS]
      .filter((t) => body.includes(`<${tag}>${t}</${tag}>`))
      .map(sha256)
      .join(" ");
  const csp = [
    "default-src 'none'",
    `script-src ${hashes("script") || "'none'"}`,
    `style-src ${hashes("style") || "'none'"}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  return {
    "Content-Security-Policy": csp,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
  };
}

export function clientIp(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
}

/** A MAC in any common spelling ("52-54-00-…", "525400…"), normalised; undefined if not one. */
export function macFromQuery(value: string | null): string | undefined {
  if (!value) return undefined;
  try {
    return formatMac(parseMac(value));
  } catch {
    return undefined;
  }
}

/**
 * Counts failed attempts (wrong tokens) per client address: after `limit` failures within
 * `windowMs` the address is refused until the window since its first failure has passed, even
 * with the right secret, so a token cannot be guessed at network speed. Bounded memory: expired
 * addresses are dropped, and at most `maxAddresses` are tracked (the oldest go first).
 */
export class FailureLimiter {
  readonly limit: number;
  readonly windowMs: number;
  readonly #now: () => number;
  readonly #maxAddresses: number;
  readonly #failures = new Map<string, { count: number; since: number }>();

  constructor(
    options: { limit?: number; windowMs?: number; now?: () => number; maxAddresses?: number } = {},
  ) {
    this.limit = options.limit ?? 5;
    this.windowMs = options.windowMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#maxAddresses = options.maxAddresses ?? 10_000;
  }

  /** Milliseconds until `ip` may try again; 0 when it may now. */
  blockedFor(ip: string): number {
    const f = this.#failures.get(ip);
    if (!f) return 0;
    const left = f.since + this.windowMs - this.#now();
    if (left <= 0) {
      this.#failures.delete(ip);
      return 0;
    }
    return f.count >= this.limit ? left : 0;
  }

  failed(ip: string): void {
    const now = this.#now();
    const f = this.#failures.get(ip);
    if (f && now - f.since < this.windowMs) {
      f.count++;
      return;
    }
    this.#failures.delete(ip);
    if (this.#failures.size >= this.#maxAddresses) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    this.#failures.set(ip, { count: 1, since: now });
  }
}
