// One route table for the boot server's HTTP side: each route says its method, its path, who
// it is for (machines booting, or people and their tools) and its metrics label. Routing, the
// metrics labels and the read-token rule all come from it, so a new path cannot be added
// without saying whether it needs the token.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../lib/log.ts";
import { HttpError } from "./http-util.ts";

/** machine: what firmware and booting systems fetch (never behind a token); people: the rest. */
export type Audience = "machine" | "people";

export interface Route {
  /** GET also answers HEAD. */
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Matched against the whole path (no query); its groups are handed to `handle`. */
  pattern: RegExp;
  audience: Audience;
  /** The metrics label: a fixed, bounded value per route family. */
  label: string;
  handle(req: IncomingMessage, res: ServerResponse, m: RegExpExecArray, url: URL): unknown;
}

export interface RouteTableOptions {
  /** With a read token: whether a people route may be answered (else it has replied). */
  allowPeople(req: IncomingMessage, res: ServerResponse): boolean;
  log: Logger;
}

export class RouteTable {
  readonly routes: readonly Route[];
  readonly #o: RouteTableOptions;

  constructor(routes: Route[], options: RouteTableOptions) {
    this.routes = routes;
    this.#o = options;
  }

  #find(path: string): { route: Route; m: RegExpExecArray }[] {
    const out = [];
    for (const route of this.routes) {
      const m = route.pattern.exec(path);
      if (m) out.push({ route, m });
    }
    return out;
  }

  /** The metrics label of a request URL ("other" for paths no route knows). */
  label(url: string): string {
    return this.#find(url.replace(/\?.*$/, ""))[0]?.route.label ?? "other";
  }

  /** Answers a request: the route, its audience's rule, its handler; errors as statuses. */
  async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? "/", "http://x");
      const found = this.#find(url.pathname);
      const method = req.method === "HEAD" ? "GET" : req.method;
      const hit = found.find((f) => f.route.method === method);
      if (!hit) {
        if (found.length) throw new HttpError(405, `${req.method} is not supported here`);
        throw new HttpError(
          404,
          `Nothing at ${url.pathname}. Boot clients start at /boot.ipxe; the API is at /api/machines and /api/events.`,
        );
      }
      if (hit.route.audience === "people" && !this.#o.allowPeople(req, res)) return;
      await hit.route.handle(req, res, hit.m, url);
    } catch (err) {
      // A malformed %-escape in the path is the client's mistake, not the server's.
      const status = err instanceof HttpError ? err.status : err instanceof URIError ? 400 : 500;
      if (status === 500) this.#o.log.error({ err, url: req.url }, "http request failed");
      if (!res.headersSent) {
        res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8" });
        res.end(`${(err as Error).message}\n`);
      } else {
        res.destroy();
      }
    }
  }
}
