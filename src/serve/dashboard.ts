// The dashboard: server-rendered pages (machines, a machine's timeline, catalog, images,
// cache and mirrors), server-sent events for live updates, the roll-back write action (off
// unless configured, token-guarded) and Prometheus /metrics. It reads what the boot server
// knows through DashboardSources; the boot server routes /ui/*, /metrics and
// /api/events/stream here.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { cacheCoverage, openChunkCache } from "../block/chunk-cache.ts";
import type { ChunkCache } from "../block/chunk-cache.ts";
import { decodeProfile, profileChunks } from "../block/profile.ts";
import type { ProfileEntry } from "../block/profile.ts";
import { profilePath } from "../store/boot-pack.ts";
import { openImage } from "../store/source.ts";
import type { DhcpServer } from "../dhcp/server.ts";
import type { LiveIso } from "../iso/live-iso.ts";
import type { Logger } from "../lib/log.ts";
import type { NbdServer } from "../nbd/server.ts";
import { listStore } from "../store/list.ts";
import type { ListedRelease } from "../store/list.ts";
import { isUrl, openStoreReader } from "../store/store-reader.ts";
import { loadTrustedKeys } from "../store/trust.ts";
import type { TftpServer } from "../tftp/server.ts";
import type { Entry, ServeConfig } from "./config.ts";
import type { EventInput, EventLog } from "./events.ts";
import { healthFamilies } from "./server-health.ts";
import type { LoopDelay } from "./server-health.ts";
import { clientIp, FailureLimiter, HttpError, macFromQuery, send } from "./http-util.ts";
import type { ImageExports } from "./image-exports.ts";
import { family, renderFamilies } from "./metrics.ts";
import type { Family, Metrics } from "./metrics.ts";
import { html, page } from "./ui/html.ts";
import {
  cachePage,
  catalogPage,
  imagesPage,
  machinePage,
  machineRows,
  machinesPage,
} from "./ui/pages.ts";
import type { CacheView, ImageView, IsoView, MachineRow } from "./ui/pages.ts";

/** What the dashboard reads from the boot server (getters: parts start and stop). */
export interface DashboardSources {
  config: ServeConfig;
  loop: LoopDelay;
  events: EventLog;
  metrics: Metrics;
  log: Logger;
  machineRows(): MachineRow[];
  record(input: EventInput): void;
  images(): ImageExports | null;
  isos: Map<string, Promise<LiveIso>>;
  /** Bytes hashed so far while an ISO entry is checked whole, and why its last opening failed. */
  isoProgress: ReadonlyMap<string, { done: number; total: number }>;
  isoErrors: ReadonlyMap<string, string>;
  dhcp(): DhcpServer | null;
  tftp(): TftpServer | null;
  nbd(): NbdServer | null;
}

/** Bytes of events an event-stream client may leave unread before it is disconnected. */
const MAX_STREAM_BACKLOG = 4 << 20;

/** How much of an oversized form is read and thrown away so its 413 page arrives whole. */
const DRAIN_LIMIT = 1 << 20;

/**
 * A request body up to `limit` bytes; null when it is longer. The rest of a longer body is
 * read and dropped (up to DRAIN_LIMIT; past that the connection is cut) so the client gets the
 * 413 page instead of a reset.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string | null> {
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

/**
 * Paths for people and their tools (pages, /api, /metrics, the text index) — guarded by
 * ui.read-token; the rest (boot scripts, plans, kernels, ISOs, /healthz) is what machines fetch.
 */
function forPeople(path: string): boolean {
  return (
    path === "/" ||
    path === "/metrics" ||
    path === "/ui" ||
    path.startsWith("/ui/") ||
    path.startsWith("/api/")
  );
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

const NOTHING_CACHED = {
  release: "—",
  needed: 0,
  missing: 0,
  bytesMissing: 0,
  basis: "—",
  problem: "nothing of it is in the cache yet",
};

/** Whether the latest release of `source` kept in the cache can boot with no network. */
async function cachedOffline(
  entry: Extract<Entry, { kind: "image" }>,
  source: string,
  cache: ChunkCache,
): Promise<CacheView["offline"][number]> {
  let image;
  try {
    image = await openImage(source, {
      store: cache.dir,
      policy: {
        trusted: loadTrustedKeys(entry.image.trust),
        insecure: entry.image.insecure,
        statePath: null,
      },
    });
  } catch {
    return { ...NOTHING_CACHED, entry: entry.name };
  }
  try {
    const digest = image.release?.release.profile;
    let profile: ProfileEntry[] | null = null;
    if (digest) {
      const text = await readFile(join(cache.dir, profilePath(digest)), "utf8").catch(() => null);
      profile = text === null ? null : decodeProfile(text);
    }
    const cover = cacheCoverage(
      cache,
      profile ? profileChunks(image.index, profile) : image.index.chunks,
    );
    return {
      entry: entry.name,
      release: image.label,
      ...cover,
      basis: profile ? "the release's boot profile" : "the whole image",
      problem: null,
    };
  } finally {
    await image.close();
  }
}

export class Dashboard {
  readonly #s: DashboardSources;
  /** Wrong tokens per address: five a minute, then refused for the rest of it. */
  readonly #guesses = new FailureLimiter();
  /** Store listings for the images page, kept for 30 s. */
  readonly #listings = new Map<string, { at: number; p: Promise<ListedRelease[]> }>();

  constructor(sources: DashboardSources) {
    this.#s = sources;
  }

  /** Serves the request if it is the dashboard's; false otherwise. */
  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
    const path = url.pathname;
    if (this.#s.config.ui.readToken && forPeople(path) && !this.#readAllowed(req, res)) return true;
    const pin = /^\/ui\/images\/([^/]+)\/pin$/.exec(path);
    if (pin && req.method === "POST") {
      await this.#pinAction(req, res, decodeURIComponent(pin[1]));
      return true;
    }
    const reset = /^\/ui\/machines\/([^/]+)\/reset-disk$/.exec(path);
    if (reset && req.method === "POST") {
      const mac = macFromQuery(decodeURIComponent(reset[1]));
      if (!mac) throw new HttpError(404, `"${reset[1]}" is not a MAC address`);
      await this.#resetDiskAction(req, res, mac);
      return true;
    }
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    if (path === "/metrics") {
      send(
        res,
        200,
        renderFamilies([...this.#s.metrics.families(), ...(await this.#scrape())]),
        "text/plain; version=0.0.4; charset=utf-8",
      );
      return true;
    }
    if (path === "/api/events/stream") {
      this.#stream(req, res, url);
      return true;
    }
    if (path === "/ui" || (path === "/" && /text\/html/.test(req.headers.accept ?? ""))) {
      res.writeHead(302, { Location: "/ui/machines" }).end();
      return true;
    }
    if (!path.startsWith("/ui/")) return false;
    await this.#ui(req, res, url);
    return true;
  }

  #refused(reason: string): void {
    this.#s.metrics.inc(
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
  #readAllowed(req: IncomingMessage, res: ServerResponse): boolean {
    const expected = this.#s.config.ui.readToken ?? "";
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
    if (given !== null && sameSecret(given, expected)) return true;
    if (given !== null) {
      this.#guesses.failed(ip);
      this.#refused("wrong read token");
      this.#s.log.warn({ url: req.url, ip }, "wrong read token");
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

  /** Server-sent events: the backlog after `since` (or Last-Event-ID), then each new event. */
  #stream(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const mac = macFromQuery(url.searchParams.get("mac"));
    const since = Number(req.headers["last-event-id"] ?? url.searchParams.get("since") ?? 0) || 0;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      Connection: "keep-alive",
    });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const send = (e: { seq: number }): void => {
      // A client that does not read is let go, not buffered for without end.
      if (res.writableLength > MAX_STREAM_BACKLOG) res.destroy();
      else res.write(`id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    res.write("retry: 2000\n\n");
    for (const e of this.#s.events.events({ since, mac })) send(e);
    const unsubscribe = this.#s.events.subscribe((e) => {
      if (!mac || e.mac === mac) send(e);
    });
    const heartbeat = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
    req.socket.setTimeout(0);
    res.once("close", () => {
      clearInterval(heartbeat);
      unsubscribe();
    });
  }

  async #ui(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const path = url.pathname;
    const htmlType = "text/html; charset=utf-8";
    if (path === "/ui/machines") {
      if (url.searchParams.get("part") === "rows") {
        send(res, 200, machineRows(this.#s.machineRows()).text, htmlType);
      } else send(res, 200, machinesPage(this.#s.machineRows()), htmlType);
      return;
    }
    const m = /^\/ui\/machines\/([^/]+)$/.exec(path);
    if (m) {
      const mac = macFromQuery(decodeURIComponent(m[1]));
      if (!mac) throw new HttpError(404, `"${m[1]}" is not a MAC address`);
      const row = this.#s.machineRows().find((r) => r.mac === mac);
      // The disk of the image entry it boots can be reset when write actions are on.
      const next = row ? this.#s.config.entries.get(row.next.entry) : undefined;
      const resettable = this.#s.config.ui.write && next?.kind === "image" ? next.name : null;
      const staysOn = resettable ? (this.#s.images()?.staysOn(resettable, mac) ?? null) : null;
      send(
        res,
        200,
        machinePage(mac, row, this.#s.events.events({ mac }), resettable, staysOn),
        htmlType,
      );
      return;
    }
    if (path === "/ui/catalog") {
      send(res, 200, catalogPage(this.#s.config), htmlType);
      return;
    }
    if (path === "/ui/images") {
      const [images, isos] = await Promise.all([this.#imageViews(), this.#isoViews()]);
      send(res, 200, imagesPage(images, isos, this.#s.config.ui.write), htmlType);
      return;
    }
    if (path === "/ui/cache") {
      send(res, 200, cachePage(await this.#cacheView()), htmlType);
      return;
    }
    throw new HttpError(404, `No page at ${path}; the dashboard starts at /ui/machines`);
  }

  /** The releases in an image entry's first store (listed at most every 30 s). */
  #listing(entry: Extract<Entry, { kind: "image" }>): Promise<ListedRelease[]> {
    const store = entry.image.stores[0];
    const cached = this.#listings.get(store);
    if (cached && Date.now() - cached.at < 30_000) return cached.p;
    const reader = openStoreReader(store);
    const p = listStore(reader, {
      // Sizes of chunk files: a stat each in a local store; HTTP stores would need a HEAD each.
      storedBytes: !isUrl(store),
      policy: {
        trusted: loadTrustedKeys(entry.image.trust),
        insecure: entry.image.insecure,
        statePath: null,
      },
    }).finally(() => void reader.close?.());
    this.#listings.set(store, { at: Date.now(), p });
    p.catch(() => this.#listings.delete(store));
    return p;
  }

  #imageEntries(): Extract<Entry, { kind: "image" }>[] {
    return [...this.#s.config.entries.values()].filter((e) => e.kind === "image");
  }

  async #imageViews(): Promise<ImageView[]> {
    const opened = new Map(
      ((await this.#s.images()?.opened()) ?? []).map((o) => [o.entry, o.stack.label]),
    );
    return Promise.all(
      this.#imageEntries().map(async (e) => {
        let releases: ListedRelease[] | null = null;
        let error: string | null = null;
        try {
          releases = await this.#listing(e);
        } catch (err) {
          error = (err as Error).message;
        }
        return {
          entry: e.name,
          source: e.image.source,
          stores: e.image.stores,
          pinned: this.#s.images()?.pin(e.name) ?? null,
          open: opened.get(e.name) ?? null,
          releases,
          error,
        };
      }),
    );
  }

  async #isoViews(): Promise<IsoView[]> {
    const out: IsoView[] = [];
    for (const e of this.#s.config.entries.values()) {
      if (e.kind !== "iso") continue;
      // Never waits for an ISO still opening (a whole-ISO check can take minutes).
      const pending = this.#s.isos.get(e.name);
      const iso = pending
        ? await Promise.race([pending, Promise.resolve("opening" as const)]).catch(() => null)
        : null;
      const progress = this.#s.isoProgress.get(e.name);
      const error = this.#s.isoErrors.get(e.name);
      const opened = iso !== "opening" ? iso : null;
      out.push({
        entry: e.name,
        iso: e.iso,
        family: opened?.recipe.family ?? null,
        cachedBytes: opened ? (opened.cacheStats?.cachedBytes ?? opened.device.size) : null,
        size: opened?.device.size ?? null,
        check: e.checksums
          ? { kind: "signed-list", list: e.checksums.url }
          : e.signature
            ? { kind: "signature", url: e.signature.url }
            : e.sha256
              ? { kind: "sha256", sha256: e.sha256 }
              : { kind: "own-list" },
        state: opened
          ? { kind: "open" }
          : iso === "opening"
            ? {
                kind: "opening",
                percent: progress
                  ? Math.floor((100 * progress.done) / Math.max(1, progress.total))
                  : null,
              }
            : error
              ? { kind: "failed", error }
              : { kind: "not-opened" },
      });
    }
    return out;
  }

  async #cacheView(): Promise<CacheView> {
    const opened = (await this.#s.images()?.opened()) ?? [];
    const cacheDir = this.#s.config.cacheDir;
    const cache =
      opened.find((o) => o.stack.cache)?.stack.cache ??
      (existsSync(cacheDir) ? openChunkCache(cacheDir) : null);
    const view: CacheView = {
      dir: this.#s.config.cacheDir,
      bytes: cache?.totalBytes ?? null,
      chunks: cache?.chunkCount ?? null,
      blockCaches: cache?.blockCaches ?? null,
      quotaBytes: cache?.quotaBytes ?? null,
      hits: cache?.stats.hits ?? 0,
      misses: cache?.stats.misses ?? 0,
      offline: [],
      mirrors: [],
      isos: [],
    };
    for (const o of opened) {
      const index = o.stack.image?.index;
      if (index && cache) {
        const profile = o.trace.profile;
        const basis = profile.length ? "what machines read while booting" : "the whole image";
        const cover = cacheCoverage(
          cache,
          profile.length ? profileChunks(index, profile) : index.chunks,
        );
        view.offline.push({
          entry: o.entry,
          release: o.stack.label,
          needed: cover.needed,
          missing: cover.missing,
          bytesMissing: cover.bytesMissing,
          basis,
          problem: null,
        });
      }
      for (const m of o.stack.mirrorStats()) view.mirrors.push({ entry: o.entry, ...m });
    }
    // Entries no machine booted since the start: judged from what the cache folder keeps.
    const images = this.#s.images();
    for (const e of this.#s.config.entries.values()) {
      if (e.kind !== "image" || opened.some((o) => o.entry === e.name)) continue;
      view.offline.push(
        cache && images
          ? await cachedOffline(e, images.source(e), cache)
          : { ...NOTHING_CACHED, entry: e.name },
      );
    }
    for (const [entry, p] of this.#s.isos) {
      const c = (await p.catch(() => null))?.cacheStats;
      if (c) view.isos.push({ entry, ...c });
    }
    return view;
  }

  /** A refused write action: a page saying why (and a log line). */
  #refuse(
    req: IncomingMessage,
    res: ServerResponse,
    back: string,
    status: number,
    message: string,
  ): void {
    this.#s.log.warn({ url: req.url, ip: clientIp(req), reason: message }, "write action refused");
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
  async #authorized(
    req: IncomingMessage,
    res: ServerResponse,
    back: string,
  ): Promise<URLSearchParams | null> {
    const body = await readBody(req, 4096);
    if (body === null) {
      res.setHeader("Connection", "close");
      this.#refuse(req, res, back, 413, "The form is too large.");
      return null;
    }
    if (!this.#s.config.ui.write || !this.#s.config.ui.token) {
      this.#refuse(
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
      this.#refuse(
        req,
        res,
        back,
        429,
        `Too many wrong tokens from ${ip}: try again in ${Math.ceil(wait / 1000)} s.`,
      );
      return null;
    }
    const form = new URLSearchParams(body);
    if (!sameSecret(form.get("token") ?? "", this.#s.config.ui.token)) {
      this.#guesses.failed(ip);
      this.#refused("wrong write token");
      this.#refuse(req, res, back, 403, "Wrong or missing token.");
      return null;
    }
    return form;
  }

  /** POST /ui/images/ENTRY/pin: roll an image entry back to a release (or to the latest). */
  async #pinAction(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    const back = "/ui/images";
    const form = await this.#authorized(req, res, back);
    if (!form) return;
    const entry = this.#s.config.entries.get(name);
    const images = this.#s.images();
    if (entry?.kind !== "image" || !images) {
      return this.#refuse(req, res, back, 404, `No image entry ${name}.`);
    }
    const release = form.get("release") ?? "";
    if (release === "latest") {
      await images.setPin(entry, null);
    } else {
      const known = (await this.#listing(entry)).some((r) => r.digest === release);
      if (!/^[0-9a-f]{64}$/.test(release) || !known) {
        return this.#refuse(
          req,
          res,
          back,
          400,
          `${release} is not a release of ${entry.image.source} in its store.`,
        );
      }
      await images.setPin(entry, release);
    }
    this.#s.record({ stage: "ui-pin", entry: name, ip: clientIp(req), detail: release });
    res.writeHead(303, { Location: back }).end();
  }

  /** POST /ui/machines/MAC/reset-disk: discard the machine's disk for the image it boots. */
  async #resetDiskAction(req: IncomingMessage, res: ServerResponse, mac: string): Promise<void> {
    const back = `/ui/machines/${encodeURIComponent(mac)}`;
    const form = await this.#authorized(req, res, back);
    if (!form) return;
    const entry = this.#s.config.entries.get(form.get("entry") ?? "");
    const images = this.#s.images();
    if (entry?.kind !== "image" || !images) {
      return this.#refuse(req, res, back, 404, `No image entry ${form.get("entry") ?? ""}.`);
    }
    const had = await images.resetDisk(entry, mac);
    this.#s.record({
      stage: "ui-reset-disk",
      mac,
      entry: entry.name,
      ip: clientIp(req),
      detail: had ? "disk discarded" : "no disk to discard",
    });
    res.writeHead(303, { Location: back }).end();
  }

  /** Families read from the servers' own counters at scrape time. */
  async #scrape(): Promise<Family[]> {
    const out: Family[] = [];
    const dhcp = this.#s.dhcp();
    if (dhcp) {
      const d = dhcp.stats;
      out.push(
        family("inetboot_dhcp_packets_received_total", "counter", "DHCP packets received", [
          [{}, d.received],
        ]),
        family(
          "inetboot_dhcp_packets_dropped_total",
          "counter",
          "DHCP packets dropped (malformed or not for us)",
          [[{}, d.dropped]],
        ),
        family("inetboot_dhcp_replies_total", "counter", "DHCP replies sent", [[{}, d.replies]]),
      );
    }
    const tftp = this.#s.tftp();
    if (tftp) {
      const t = tftp.stats;
      out.push(
        family("inetboot_tftp_requests_total", "counter", "TFTP read requests", [[{}, t.requests]]),
        family("inetboot_tftp_transfers_total", "counter", "TFTP transfers finished, by result", [
          [{ result: "completed" }, t.completed],
          [{ result: "failed" }, t.failed],
        ]),
        family("inetboot_tftp_sent_bytes_total", "counter", "TFTP file bytes sent", [
          [{}, t.bytes],
        ]),
        family("inetboot_tftp_packets_dropped_total", "counter", "Malformed TFTP packets dropped", [
          [{}, t.dropped],
        ]),
        family("inetboot_tftp_active_transfers", "gauge", "TFTP transfers in progress", [
          [{}, t.active],
        ]),
      );
    }
    const nbd = this.#s.nbd();
    if (nbd) {
      const n = nbd.stats;
      out.push(
        family("inetboot_nbd_connections_total", "counter", "NBD connections accepted", [
          [{}, n.connections],
        ]),
        family(
          "inetboot_nbd_requests_total",
          "counter",
          "NBD requests by command",
          Object.entries(n.requests).map(([command, v]) => [{ command }, v]),
        ),
        family("inetboot_nbd_errors_total", "counter", "NBD requests answered with an error", [
          [{}, n.errors],
        ]),
        family("inetboot_nbd_read_bytes_total", "counter", "Bytes read by NBD clients", [
          [{}, n.bytesRead],
        ]),
        family("inetboot_nbd_written_bytes_total", "counter", "Bytes written by NBD clients", [
          [{}, n.bytesWritten],
        ]),
      );
    }
    out.push(
      ...healthFamilies({
        loop: this.#s.loop,
        tftp,
        nbd,
        exports: this.#s.images()?.counts ?? null,
      }),
    );
    const opened = (await this.#s.images()?.opened()) ?? [];
    const cache = opened.find((o) => o.stack.cache)?.stack.cache;
    if (cache) {
      const c = cache.stats;
      out.push(
        family("inetboot_cache_hits_total", "counter", "Chunk cache hits", [[{}, c.hits]]),
        family("inetboot_cache_misses_total", "counter", "Chunk cache misses", [[{}, c.misses]]),
        family("inetboot_cache_evictions_total", "counter", "Chunks evicted from the cache", [
          [{}, c.evictions],
        ]),
        family("inetboot_cache_bytes", "gauge", "Bytes in the chunk cache", [
          [{}, cache.totalBytes],
        ]),
        family("inetboot_cache_quota_bytes", "gauge", "The chunk cache's quota", [
          [{}, cache.quotaBytes],
        ]),
      );
    }
    const mirrors = opened.flatMap((o) =>
      o.stack.mirrorStats().map((m) => ({ entry: o.entry, ...m })),
    );
    if (mirrors.length) {
      const l = (m: (typeof mirrors)[number]): Record<string, string> => ({
        entry: m.entry,
        mirror: m.location,
      });
      out.push(
        family(
          "inetboot_mirror_requests_total",
          "counter",
          "Chunk requests per mirror",
          mirrors.map((m) => [l(m), m.requests]),
        ),
        family(
          "inetboot_mirror_failures_total",
          "counter",
          "Failed chunk requests per mirror",
          mirrors.map((m) => [l(m), m.failures]),
        ),
        family(
          "inetboot_mirror_failovers_total",
          "counter",
          "Chunks fetched from another mirror after this one failed",
          mirrors.map((m) => [l(m), m.failovers]),
        ),
        family(
          "inetboot_mirror_healthy",
          "gauge",
          "1 when the mirror is not penalised",
          mirrors.map((m) => [l(m), m.healthy ? 1 : 0]),
        ),
      );
    }
    if (opened.length) {
      out.push(
        family(
          "inetboot_image_fetched_bytes_total",
          "counter",
          "Chunk bytes fetched for an image (mirrors and boot pack)",
          opened.map((o) => [
            { entry: o.entry },
            (o.stack.mirrors?.fetchedBytes ?? 0) + (o.stack.pack?.deliveredBytes ?? 0),
          ]),
        ),
        family(
          "inetboot_image_read_bytes",
          "gauge",
          "Distinct bytes machines read from an image",
          opened.map((o) => [{ entry: o.entry }, o.trace.coveredBytes]),
        ),
      );
    }
    const isoStats: [Record<string, string>, NonNullable<LiveIso["cacheStats"]>][] = [];
    for (const [entry, p] of this.#s.isos) {
      const c = (await p.catch(() => null))?.cacheStats;
      if (c) isoStats.push([{ entry }, c]);
    }
    if (isoStats.length) {
      out.push(
        family(
          "inetboot_iso_fetched_bytes_total",
          "counter",
          "ISO bytes fetched from the origin",
          isoStats.map(([l, c]) => [l, c.fetchedBytes]),
        ),
        family(
          "inetboot_iso_cache_hits_total",
          "counter",
          "ISO blocks read from the block cache",
          isoStats.map(([l, c]) => [l, c.hits]),
        ),
        family(
          "inetboot_iso_cache_misses_total",
          "counter",
          "ISO blocks fetched from the origin",
          isoStats.map(([l, c]) => [l, c.misses]),
        ),
      );
    }
    return out;
  }
}
