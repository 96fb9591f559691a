// Who may read and write the dashboard: with ui.read-token, pages, /api and /metrics need it
// (HTTP Basic password or Bearer token); write actions need ui.token in their form. Wrong
// tokens are limited per address (five a minute, then refused for the rest of it), refusals
// are counted, and a refused write action gets a page saying why.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../lib/log.ts";
import type { ServeConfig } from "./config.ts";
import { clientIp, FailureLimiter, HttpError, send } from "./http-util.ts";
import type { Metrics } from "./metrics.ts";
import { html, page } from "./ui/html.ts";

/** How much of an oversized form is read and thrown away so its 413 page arrives whole. */
const DRAIN_LIMIT = 1 << 20;

/**
 * A request body up to `limit` bytes; null when it is longer. The rest of a longer body is
 * read and dropped (up to DRAIN_LIMIT; past that the connection is cut) so the client gets the
 * 413 page instead of a reset.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<string | null> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const parts: Buffer[] = [];
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > DRAIN_LIMIT) {
      req.destroy();
      reject(new HttpError(413, "The form is too large."));
      return;
    }
    req.on("data", (d: Buffer) => {
      size += d.length;
      if (size > DRAIN_LIMIT) {
        req.destroy();
        reject(new HttpError(413, "The form is too large."));
      } else if (size <= limit) parts.push(d);
    });
    req.on("end", () => resolve(size > limit ? null : Buffer.concat(parts).toString("utf8")));
    req.on("error", reject);
  });
}

/** Compares secrets in constant time (hashes first, so lengths do not leak either). */
function sameSecret(given: string, expected: string): boolean {
  const h = (s: string): Buffer => createHash("sha256").update(s).digest();
  return timingSafeEqual(h(given), h(expected));
}

/** The secret in an Authorization header: a Bearer token or a Basic password; null if none. */
function presentedSecret(header: string | undefined): string | null {
  const m = /^(Basic|Bearer)\s+(\S+)\s*$/i.exec(header ?? "");
  if (!m) return null;
  if (m[1].toLowerCase() === "bearer") return m[2];
  const decoded = Buffer.from(m[2], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? null : decoded.slice(colon + 1);
}

export class PeopleAuth {
  readonly #live: () => ServeConfig;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  /** Wrong tokens per address: five a minute, then refused for the rest of it. */
  readonly #guesses = new FailureLimiter();

  constructor(config: () => ServeConfig, metrics: Metrics, log: Logger) {
    this.#live = config;
    this.#metrics = metrics;
    this.#log = log;
  }

  #refused(reason: string): void {
    this.#metrics.inc(
      "inetboot_ui_refusals_total",
      "Dashboard and API requests refused: no or wrong read token, wrong write token, too many tries",
      { reason },
    );
  }

  /**
   * With ui.read-token, whether the request carries it (HTTP Basic password, any user name, or a
   * Bearer token, as Prometheus sends it). If not, the reply (401 asking for Basic credentials,
   * or 429 after five wrong ones a minute from the address) is sent and false returned.
   */
  readAllowed(req: IncomingMessage, res: ServerResponse): boolean {
    const expected = this.#live().ui.readToken;
    if (!expected) return true;
    const ip = clientIp(req);
    const wait = this.#guesses.blockedFor(ip);
    if (wait > 0) {
      this.#refused("too many tries");
      res.setHeader("Retry-After", Math.ceil(wait / 1000));
      send(
        res,
        429,
        `Too many wrong tokens from ${ip}: try again in ${Math.ceil(wait / 1000)} s.\n`,
        "text/plain; charset=utf-8",
      );
      return false;
    }
    const given = presentedSecret(req.headers.authorization);
    // The write token reads too (an API client holds one token).
    const write = this.#live().ui.token;
    if (given !== null && (sameSecret(given, expected) || (write && sameSecret(given, write))))
      return true;
    if (given !== null) {
      this.#guesses.failed(ip);
      this.#refused("wrong read token");
      this.#log.warn({ url: req.url, ip }, "wrong read token");
    } else this.#refused("no read token");
    res.setHeader("WWW-Authenticate", 'Basic realm="inetboot", charset="UTF-8"');
    send(
      res,
      401,
      given === null
        ? "This server's pages, /api and /metrics need its read token (ui.read-token): as the password of HTTP Basic authentication (any user name) or as a Bearer token.\n"
        : "Wrong read token.\n",
      "text/plain; charset=utf-8",
    );
    return false;
  }

  /**
   * Why an API write is refused — write actions off, no or a wrong Bearer token (limited per
   * address like the forms' tokens) — or null when it may go on.
   */
  apiWrite(req: IncomingMessage): { status: number; message: string } | null {
    const { write, token } = this.#live().ui;
    if (!write || !token) {
      return {
        status: 403,
        message:
          "Write actions are off on this server (ui.write and ui.token in its configuration).",
      };
    }
    const ip = clientIp(req);
    const wait = this.#guesses.blockedFor(ip);
    if (wait > 0) {
      this.#refused("too many tries");
      return {
        status: 429,
        message: `Too many wrong tokens from ${ip}: try again in ${Math.ceil(wait / 1000)} s.`,
      };
    }
    // Bearer only: a browser sends a Basic password by itself to any request, a site's too.
    const given = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "")?.[1] ?? null;
    if (given === null || !sameSecret(given, token)) {
      if (given !== null) this.#guesses.failed(ip);
      this.#refused(given === null ? "no write token" : "wrong write token");
      this.#log.warn({ url: req.url, ip }, "api write refused");
      return {
        status: 401,
        message:
          given === null
            ? "Writes need the server's write token (ui.token) as a Bearer token."
            : "Wrong write token.",
      };
    }
    return null;
  }

  /** A refused write action: a page saying why (and a log line). */
  refuse(
    req: IncomingMessage,
    res: ServerResponse,
    back: string,
    status: number,
    message: string,
  ): void {
    this.#log.warn({ url: req.url, ip: clientIp(req), reason: message }, "write action refused");
    send(
      res,
      status,
      page(
        "Refused",
        back,
        html`<h1>Refused</h1>
          <p class="bad">${message}</p>
          <p><a href="${back}">Back</a></p>`,
      ),
      "text/html; charset=utf-8",
    );
  }

  /** The form of a write action when write actions are on and its token is right; else null. */
  async authorized(
    req: IncomingMessage,
    res: ServerResponse,
    back: string,
  ): Promise<URLSearchParams | null> {
    const body = await readBody(req, 4096);
    if (body === null) {
      res.setHeader("Connection", "close");
      this.refuse(req, res, back, 413, "The form is too large.");
      return null;
    }
    const { write, token } = this.#live().ui;
    if (!write || !token) {
      this.refuse(
        req,
        res,
        back,
        403,
        "Write actions are off on this server (ui.write in the configuration).",
      );
      return null;
    }
    const ip = clientIp(req);
    const wait = this.#guesses.blockedFor(ip);
    if (wait > 0) {
      this.#refused("too many tries");
      res.setHeader("Retry-After", Math.ceil(wait / 1000));
      this.refuse(
        req,
        res,
        back,
        429,
        `Too many wrong tokens from ${ip}: try again in ${Math.ceil(wait / 1000)} s.`,
      );
      return null;
    }
    const form = new URLSearchParams(body);
    if (!sameSecret(form.get("token") ?? "", token)) {
      this.#guesses.failed(ip);
      this.#refused("wrong write token");
      this.refuse(req, res, back, 403, "Wrong or missing token.");
      return null;
    }
    return form;
  }
}
