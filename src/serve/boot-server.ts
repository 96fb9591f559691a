// `inetboot serve`: DHCP (full or proxy), TFTP and HTTP in one process, answering boot firmware
// with the right first stage and each machine with its boot plan, and recording every stage.
import { createHash, timingSafeEqual } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, join } from "node:path";
import { buildNbdOverlay, nbdOverlayCmdline, nbdRootCmdline } from "../boot/nbd-overlay.ts";
import { firmwareKey } from "../dhcp/firmware.ts";
import { LeaseDb } from "../dhcp/leases.ts";
import { formatMac, parseMac } from "../dhcp/packet.ts";
import { DhcpServer } from "../dhcp/server.ts";
import type { BootAnswer, DhcpClient } from "../dhcp/server.ts";
import { RemoteFileCache } from "../http/file-cache.ts";
import { sendFile } from "../http/send-file.ts";
import { silentLogger } from "../log.ts";
import type { Logger } from "../log.ts";
import { interfaceAddress, interfaceIndex } from "../net/interface.ts";
import { NbdServer } from "../nbd/server.ts";
import { TftpServer } from "../tftp/server.ts";
import { VirtualTree } from "../tftp/tree.ts";
import type { Entry, FileRef, ServeConfig } from "./config.ts";
import { EventLog } from "./events.ts";
import type { EventInput } from "./events.ts";
import { ImageExports } from "./image-exports.ts";
import { LiveIso, LiveIsoError } from "../iso/live-iso.ts";
import { bootScript, entryScript, errorScript, IPXE_FACTS } from "./ipxe-script.ts";
import { OnceState } from "./once.ts";
import { family, Metrics, renderFamilies } from "./metrics.ts";
import type { Family } from "./metrics.ts";
import {
  cachePage,
  catalogPage,
  imagesPage,
  machinePage,
  machineRows,
  machinesPage,
} from "./ui/pages.ts";
import type { CacheView, ImageView, IsoView, MachineRow } from "./ui/pages.ts";
import { html, page } from "./ui/html.ts";
import { cacheCoverage } from "../block/chunk-cache.ts";
import { profileChunks } from "../block/profile.ts";
import { listStore } from "../store/list.ts";
import type { ListedRelease } from "../store/list.ts";
import { openStoreReader } from "../store/store-reader.ts";
import { loadTrustedKeys } from "../store/trust.ts";
import { chooseEntry, firmwareArchNames, ipxeArchNames } from "./plan.ts";
import type { Choice, MachineFacts } from "./plan.ts";

export interface BootServerOptions {
  logger?: Logger;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function macFromQuery(value: string | null): string | undefined {
  if (!value) return undefined;
  try {
    return formatMac(parseMac(value));
  } catch {
    return undefined;
  }
}

/** The route family of a request path, for metrics (bounded label values). */
function routeLabel(url: string): string {
  const path = url.replace(/\?.*$/, "");
  if (path === "/" || path === "/boot.ipxe" || path === "/metrics" || path === "/healthz")
    return path;
  const m = /^\/(ipxe\/boot|ipxe\/entry|files|iso|firmware|api|ui)(\/|$)/.exec(path);
  return m ? `/${m[1]}` : "other";
}

/** A request body up to `limit` bytes (rejects beyond). */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => {
      size += d.length;
      if (size > limit) {
        reject(new Error("body too large"));
        req.destroy();
      } else parts.push(d);
    });
    req.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    req.on("error", reject);
  });
}

/** Compares secrets in constant time (hashes first, so lengths do not leak either). */
function sameSecret(given: string, expected: string): boolean {
  const h = (s: string): Buffer => createHash("sha256").update(s).digest();
  return timingSafeEqual(h(given), h(expected));
}

export class BootServer {
  readonly config: ServeConfig;
  readonly events = new EventLog();
  readonly metrics = new Metrics();
  /** Store listings for the images page, kept for 30 s. */
  readonly #listings = new Map<string, { at: number; p: Promise<ListedRelease[]> }>();
  readonly #log: Logger;
  readonly #address: string;
  #http: Server | null = null;
  #tftp: TftpServer | null = null;
  #dhcp: DhcpServer | null = null;
  #once: OnceState | null = null;
  #nbd: NbdServer | null = null;
  #nbdPort = 0;
  #nbdOverlayPath: string | null = null;
  #images: ImageExports | null = null;
  readonly #isos = new Map<string, Promise<LiveIso>>();
  readonly #remote: RemoteFileCache;
  readonly #firstStageFiles: Record<string, string> = {};

  constructor(config: ServeConfig, options: BootServerOptions = {}) {
    this.config = config;
    this.#log = options.logger ?? silentLogger;
    this.#remote = new RemoteFileCache(join(config.stateDir, "files"), this.#log);
    const fromInterface = config.listen.interface
      ? interfaceAddress(config.listen.interface)?.address
      : undefined;
    this.#address = config.listen.address ?? fromInterface ?? "127.0.0.1";
    Object.assign(this.#firstStageFiles, config.tftp.ipxeFiles);
    for (const path of Object.values(config.tftp.firstStages)) {
      this.#firstStageFiles[basename(path)] = path;
    }
  }

  /** The address machines reach this server at (DHCP next-server, URLs). */
  get address(): string {
    return this.#address;
  }

  get httpPort(): number {
    return (this.#http?.address() as AddressInfo | null)?.port ?? this.config.http.port;
  }

  get tftpPort(): number {
    return this.#tftp?.port ?? 0;
  }

  /** The base URL handed to machines in DHCP answers. */
  get baseUrl(): string {
    return this.config.http.publicUrl ?? `http://${this.#address}:${this.httpPort}`;
  }

  /** Starts every configured part; if one cannot start, the others are stopped again. */
  async start(): Promise<void> {
    try {
      await this.#start();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async #start(): Promise<void> {
    const c = this.config;
    this.#once = await OnceState.open(join(c.stateDir, "once.json"));
    await this.#startHttp();
    if (c.tftp.enabled) {
      this.#tftp = new TftpServer({
        tree: new VirtualTree(c.tftp.root ?? null, this.#firstStageFiles),
        port: c.tftp.port,
        address: c.listen.interface ? "0.0.0.0" : this.#address,
        interface: c.listen.interface,
        maxBlksize: c.tftp.maxBlksize,
        maxWindowsize: c.tftp.maxWindowsize,
        logger: this.#log,
        onEvent: (e) => {
          const ip = e.client.split(":")[0];
          this.#record({
            stage: e.stage,
            mac: this.events.macForIp(ip),
            ip,
            file: e.file,
            bytes: e.bytes,
            ms: e.ms,
            detail: e.error,
          });
        },
      });
      await this.#tftp.start();
    }
    if ([...c.entries.values()].some((e) => e.kind === "image")) await this.#startNbd();
    if (c.dhcp.mode !== "off") await this.#startDhcp();
  }

  async #startDhcp(): Promise<void> {
    const c = this.config;
    if (c.listen.interface) interfaceIndex(c.listen.interface); // says so if it does not exist
    const iface = c.listen.interface ? interfaceAddress(c.listen.interface) : undefined;
    if (!c.listen.address && !iface) {
      throw new Error(
        `Interface ${c.listen.interface} has no IPv4 address for DHCP to answer from; give it one or set listen.address`,
      );
    }
    let leases: LeaseDb | undefined;
    const netmask = c.dhcp.netmask ?? iface?.netmask ?? "255.255.255.0";
    if (c.dhcp.mode === "full" && c.dhcp.range) {
      leases = await LeaseDb.open(
        {
          rangeStart: c.dhcp.range[0],
          rangeEnd: c.dhcp.range[1],
          netmask,
          reservations: c.dhcp.reservations,
          leaseSeconds: c.dhcp.leaseSeconds,
        },
        c.dhcp.leaseFile ?? join(c.stateDir, "leases.json"),
      );
    }
    this.#dhcp = new DhcpServer({
      mode: c.dhcp.mode === "full" ? "full" : "proxy",
      serverAddress: this.#address,
      interface: c.listen.interface,
      port: c.dhcp.port,
      proxyPort: c.dhcp.proxyPort,
      leases,
      netmask,
      router: c.dhcp.router,
      dns: c.dhcp.dns,
      domain: c.dhcp.domain,
      leaseSeconds: c.dhcp.leaseSeconds,
      boot: (client) => this.#dhcpBoot(client),
      rootPath: (client) => this.#rootPath(client),
      onEvent: (e) => {
        const facts = { firmware: e.firmware, hostname: e.hostname, uuid: e.firmware?.uuid };
        this.#record(
          { stage: e.stage, mac: e.mac, ip: e.ip, file: e.file, detail: e.detail },
          facts,
        );
      },
      logger: this.#log,
    });
    await this.#dhcp.start();
  }

  /** "SERVER:PORT/EXPORT" (Debian's nbdroot= syntax) when the machine boots an image entry. */
  #rootPath(client: DhcpClient): string | undefined {
    const facts: MachineFacts = {
      mac: client.mac,
      arch: firmwareArchNames(client.firmware),
      hostname: client.hostname,
      labels: {},
    };
    const entry = this.config.entries.get(chooseEntry(this.config, facts).entry);
    if (entry?.kind !== "image" || !this.#images) return undefined;
    const name = ImageExports.exportName(entry.name, client.mac);
    return this.#images.has(name) ? `${this.#address}:${this.#nbdPort}/${name}` : undefined;
  }

  /** Plain PXE gets an iPXE first stage over TFTP, HTTP Boot its URL, iPXE the boot script. */
  #dhcpBoot(client: DhcpClient): BootAnswer | null {
    const fw = client.firmware;
    if (fw.ipxe) return { file: `${this.baseUrl}/boot.ipxe` };
    const stage = this.config.tftp.firstStages[firmwareKey(fw)];
    if (!stage) {
      this.#log.warn(
        { mac: client.mac, firmware: firmwareKey(fw), arch: fw.arch },
        `no iPXE first stage for ${fw.description}; set tftp.firstStages.${firmwareKey(fw)}`,
      );
      return null;
    }
    if (fw.http) return { file: `${this.baseUrl}/firmware/${basename(stage)}` };
    if (!this.#tftp) {
      this.#log.warn(
        { mac: client.mac },
        "a PXE client needs TFTP for its first stage; set tftp.enabled: true",
      );
      return null;
    }
    return { file: basename(stage), nextServer: this.#address };
  }

  #record(input: EventInput, facts?: Parameters<EventLog["record"]>[1]): void {
    const e = this.events.record(input, facts);
    const m = e.mac ? this.events.machine(e.mac) : undefined;
    // DHCP's view of the firmware when the machine came through our DHCP; else iPXE's report.
    const platform = m?.ipxe?.platform;
    const fw =
      m?.firmware?.kind ??
      (platform === "pcbios" ? "bios" : platform === "efi" ? "uefi" : "unknown");
    this.metrics.inc("inetboot_boot_events_total", "Boot stages reached, by stage and firmware", {
      stage: e.stage,
      firmware: m?.ipxe || m?.firmware?.ipxe ? `${fw}+ipxe` : fw,
    });
    if (
      !input.stage.startsWith("dhcp") &&
      !input.stage.startsWith("proxy") &&
      !input.stage.startsWith("pxe")
    ) {
      this.#log.info(
        {
          event: e.stage,
          mac: e.mac,
          ip: e.ip,
          file: e.file,
          entry: e.entry,
          rule: e.rule,
          bytes: e.bytes,
          detail: e.detail,
        },
        e.stage,
      );
    }
  }

  async #startHttp(): Promise<void> {
    const server = createServer((req, res) => {
      const sentBefore = req.socket.bytesWritten;
      res.once("finish", () => {
        const route = routeLabel(req.url ?? "/");
        this.metrics.inc("inetboot_http_requests_total", "HTTP requests by route and status", {
          route,
          status: String(res.statusCode),
        });
        this.metrics.inc(
          "inetboot_http_sent_bytes_total",
          "HTTP bytes sent (headers and bodies) by route",
          { route },
          Math.max(0, req.socket.bytesWritten - sentBefore),
        );
      });
      this.#route(req, res).catch((err: unknown) => {
        // A malformed %-escape in the path is the client's mistake, not the server's.
        const status = err instanceof HttpError ? err.status : err instanceof URIError ? 400 : 500;
        if (status === 500) this.#log.error({ err, url: req.url }, "http request failed");
        if (!res.headersSent) {
          res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8" });
          res.end(`${(err as Error).message}\n`);
        } else {
          res.destroy();
        }
      });
    });
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => {
        reject(
          err.code === "EADDRINUSE"
            ? new Error(
                `HTTP port ${this.config.http.port} is in use; set http.port to another port`,
              )
            : err,
        );
      });
      server.listen(this.config.http.port, this.config.http.address, () => resolve());
    });
    this.#http = server;
  }

  async #startNbd(): Promise<void> {
    const c = this.config;
    if ([...c.entries.values()].some((e) => e.kind === "image" && e.nbdOverlay)) {
      // Built once from this server's nbd-client; a missing one stops the start with the fix.
      this.#nbdOverlayPath = join(c.stateDir, "nbd-overlay.cpio");
      await mkdir(c.stateDir, { recursive: true });
      await writeFile(this.#nbdOverlayPath, await buildNbdOverlay());
    }
    // No default export: each export is one machine's disk, reachable only by its own name.
    const nbd = new NbdServer({ exports: [], defaultExport: false, logger: this.#log });
    const host = c.listen.interface ? "0.0.0.0" : this.#address;
    const bound = await nbd.listen({ host, port: c.nbd.port });
    this.#nbd = nbd;
    this.#nbdPort = "port" in bound ? bound.port : 0;
    this.#images = new ImageExports({
      nbd,
      stateDir: c.stateDir,
      cacheDir: c.cacheDir,
      allow: c.nbd.allow,
      onFetch: (seconds, mirror, ok) =>
        this.metrics.observe(
          "inetboot_chunk_fetch_seconds",
          "Chunk fetches from mirrors: duration by mirror and result",
          { mirror, result: ok ? "ok" : "error" },
          seconds,
        ),
      logger: this.#log,
    });
  }

  get nbdPort(): number {
    return this.#nbdPort;
  }

  async stop(): Promise<void> {
    await this.#dhcp?.stop();
    await this.#nbd?.close();
    await this.#images?.close();
    for (const p of this.#isos.values()) await (await p.catch(() => null))?.close();
    this.#isos.clear();
    await this.#tftp?.stop();
    const http = this.#http;
    this.#http = null;
    if (http) {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    }
  }

  #base(req: IncomingMessage): string {
    if (this.config.http.publicUrl) return this.config.http.publicUrl;
    const host = req.headers.host;
    return host && /^[\w.:[\]-]+$/.test(host) ? `http://${host}` : this.baseUrl;
  }

  #clientIp(req: IncomingMessage): string {
    return (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
  }

  #facts(url: URL, req: IncomingMessage): MachineFacts {
    const q = url.searchParams;
    const labels: Record<string, string> = {};
    for (const [k, v] of q) if (!IPXE_FACTS.includes(k) && v !== "") labels[k] = v;
    return {
      mac: macFromQuery(q.get("mac")) ?? this.events.macForIp(this.#clientIp(req)),
      uuid: q.get("uuid")?.toLowerCase() || undefined,
      arch: ipxeArchNames(q.get("buildarch") ?? undefined, q.get("platform") ?? undefined),
      hostname: q.get("hostname") || undefined,
      labels,
    };
  }

  #send(res: ServerResponse, status: number, body: string, type: string): void {
    res.writeHead(status, {
      "Content-Type": type,
      "Content-Length": Buffer.byteLength(body),
      "Cache-Control": "no-store",
    });
    res.end(body);
  }

  #json(res: ServerResponse, value: unknown): void {
    this.#send(res, 200, JSON.stringify(value, null, 1) + "\n", "application/json");
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname;
    const pin = /^\/ui\/images\/([^/]+)\/pin$/.exec(path);
    if (pin && req.method === "POST") return this.#pinAction(req, res, decodeURIComponent(pin[1]));
    if (req.method !== "GET" && req.method !== "HEAD") {
      throw new HttpError(405, `${req.method} is not supported here`);
    }
    if (path === "/metrics") {
      this.#send(
        res,
        200,
        renderFamilies([...this.metrics.families(), ...(await this.#scrape())]),
        "text/plain; version=0.0.4; charset=utf-8",
      );
      return;
    }
    if (path === "/api/events/stream") return this.#stream(req, res, url);
    if (path === "/ui" || (path === "/" && /text\/html/.test(req.headers.accept ?? ""))) {
      res.writeHead(302, { Location: "/ui/machines" }).end();
      return;
    }
    if (path.startsWith("/ui/")) return this.#ui(req, res, url);
    const ip = this.#clientIp(req);
    if (path === "/boot.ipxe") {
      const facts = this.#facts(url, req);
      this.#record({ stage: "http-boot-script", mac: facts.mac, ip });
      this.#send(res, 200, bootScript(this.#base(req), facts.labels), "text/plain; charset=utf-8");
      return;
    }
    if (path === "/ipxe/boot") return this.#plan(req, res, url);
    let m = /^\/ipxe\/entry\/([^/]+)$/.exec(path);
    if (m) return this.#entry(req, res, url, decodeURIComponent(m[1]));
    m = /^\/files\/([^/]+)\/(kernel|initrd\/(\d+))$/.exec(path);
    if (m)
      return this.#file(
        req,
        res,
        url,
        decodeURIComponent(m[1]),
        m[3] === undefined ? -1 : Number(m[3]),
      );
    m = /^\/iso\/([^/]+)\/(.+)$/.exec(path);
    if (m) return this.#isoFile(req, res, decodeURIComponent(m[1]), m[2]);
    m = /^\/firmware\/([^/]+)$/.exec(path);
    if (m && this.#firstStageFiles[m[1]]) {
      const bytes = await sendFile(req, res, this.#firstStageFiles[m[1]], {
        cacheControl: "max-age=3600",
      });
      this.#record({
        stage: "http-first-stage",
        mac: this.events.macForIp(ip),
        ip,
        file: m[1],
        bytes,
      });
      return;
    }
    if (path === "/api/events") {
      const since = Number(url.searchParams.get("since") ?? 0) || 0;
      const mac = macFromQuery(url.searchParams.get("mac"));
      this.#json(res, this.events.events({ since, mac }));
      return;
    }
    if (path === "/api/machines") {
      this.#json(res, this.#machineRows());
      return;
    }
    if (path === "/api/images") {
      this.#json(res, [...((await this.#images?.stats()) ?? []), ...(await this.#isoStats())]);
      return;
    }
    m = /^\/api\/images\/([^/]+)\/profile$/.exec(path);
    if (m) {
      // What machines read first from this image since the server opened it: a boot profile
      // for `inetboot optimize`.
      const text = await this.#images?.profile(decodeURIComponent(m[1]));
      if (text == null) throw new HttpError(404, `No opened image entry ${m[1]}`);
      this.#send(res, 200, text, "text/plain; charset=utf-8");
      return;
    }
    if (path === "/api/config") {
      this.#json(res, {
        source: this.config.source,
        entries: [...this.config.entries.values()],
        machines: this.config.machines,
        default: this.config.default,
        warnings: this.config.warnings,
      });
      return;
    }
    if (path === "/healthz") {
      this.#send(res, 200, "ok\n", "text/plain");
      return;
    }
    if (path === "/") {
      this.#send(res, 200, this.#indexText(), "text/plain; charset=utf-8");
      return;
    }
    throw new HttpError(
      404,
      `Nothing at ${path}. Boot clients start at /boot.ipxe; the API is at /api/machines and /api/events.`,
    );
  }

  /** What a known machine would boot next (for the machines API). */
  #nextFor(mac: string): Choice & { once?: string } {
    const record = this.events.machine(mac);
    const facts: MachineFacts = {
      mac,
      uuid: record?.uuid,
      hostname: record?.hostname,
      arch: record?.ipxe ? ipxeArchNames(record.ipxe.buildarch, record.ipxe.platform) : [],
      labels: {},
    };
    return this.#resolveOnce(chooseEntry(this.config, facts), mac);
  }

  #resolveOnce(choice: Choice, mac: string | undefined): Choice & { once?: string } {
    const entry = this.config.entries.get(choice.entry);
    if (entry?.once && mac && this.#once?.consumed(mac, entry.name)) {
      return {
        entry: "local",
        rule: `${choice.rule} (once: ${entry.name} already booted)`,
        once: entry.name,
      };
    }
    return choice;
  }

  #plan(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const facts = this.#facts(url, req);
    const choice = this.#resolveOnce(chooseEntry(this.config, facts), facts.mac);
    const entry = this.config.entries.get(choice.entry) as Entry;
    const q = url.searchParams;
    this.#record(
      {
        stage: "http-plan",
        mac: facts.mac,
        ip: this.#clientIp(req),
        entry: entry.name,
        rule: choice.rule,
      },
      {
        hostname: facts.hostname,
        uuid: facts.uuid,
        ipxe: {
          buildarch: q.get("buildarch") ?? undefined,
          platform: q.get("platform") ?? undefined,
        },
      },
    );
    return this.#sendEntry(req, res, url, entry, facts.mac);
  }

  #entry(req: IncomingMessage, res: ServerResponse, url: URL, name: string): Promise<void> {
    const entry = this.config.entries.get(name);
    if (!entry) throw new HttpError(404, `No entry named "${name}" in ${this.config.source}`);
    const facts = this.#facts(url, req);
    this.#record({
      stage: "http-entry",
      mac: facts.mac,
      ip: this.#clientIp(req),
      entry: name,
      rule: "menu",
    });
    return this.#sendEntry(req, res, url, entry, facts.mac);
  }

  async #sendEntry(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    entry: Entry,
    mac?: string,
  ): Promise<void> {
    const text = "text/plain; charset=utf-8";
    const usesKernel = entry.kind === "kernel" || entry.kind === "image" || entry.kind === "iso";
    if (entry.once && mac && !usesKernel) void this.#once?.consume(mac, entry.name);
    let rootCmdline: string | undefined;
    if (entry.kind === "image") {
      const ip = this.#clientIp(req);
      if (!mac) {
        this.#send(
          res,
          200,
          errorScript(`${entry.name} needs the machine's MAC (chain /boot.ipxe)`),
          text,
        );
        return;
      }
      try {
        const name = await this.#imageExport(entry, mac, ip);
        const host = new URL(this.#base(req)).hostname;
        rootCmdline = entry.nbdOverlay
          ? nbdOverlayCmdline(host, this.#nbdPort, name)
          : nbdRootCmdline(host, this.#nbdPort, name);
        this.#record({ stage: "nbd-export", mac, ip, entry: entry.name, detail: name });
      } catch (err) {
        const message = `cannot open image ${entry.image.source}: ${(err as Error).message}`;
        this.#record({ stage: "image-error", mac, ip, entry: entry.name, detail: message });
        this.#log.error(
          { entry: entry.name, err: (err as Error).message },
          "image cannot be opened",
        );
        this.#send(res, 200, errorScript(message), text);
        return;
      }
    }
    let iso: { initrds: number; cmdline: string } | undefined;
    if (entry.kind === "iso") {
      try {
        const live = await this.#liveIso(entry);
        iso = {
          initrds: live.recipe.initrd.length,
          cmdline: live.cmdline(`${this.#base(req)}/iso/${encodeURIComponent(entry.name)}`),
        };
      } catch (err) {
        const found = err instanceof LiveIsoError ? err.found : [];
        const message = `cannot boot ${entry.iso}: ${(err as Error).message}`;
        const ip = this.#clientIp(req);
        this.#record({ stage: "iso-error", mac, ip, entry: entry.name, detail: message });
        this.#log.error({ entry: entry.name, err: message, found }, "ISO cannot be booted");
        const listing = found.length
          ? `; the ISO holds ${found.slice(0, 40).join(" ")}${found.length > 40 ? " …" : ""}`
          : "";
        this.#send(res, 200, errorScript(message + listing), text);
        return;
      }
    }
    const query = new URLSearchParams(url.searchParams);
    if (mac) query.set("mac", mac.replace(/:/g, "-"));
    const script = entryScript(entry, {
      base: this.#base(req),
      query: query.toString(),
      titleOf: (n) => this.config.entries.get(n)?.title ?? n,
      rootCmdline,
      extraInitrds: entry.kind === "image" && entry.nbdOverlay ? 1 : 0,
      iso,
    });
    this.#send(res, 200, script, text);
  }

  #imageExport(entry: Extract<Entry, { kind: "image" }>, mac: string, ip: string): Promise<string> {
    if (!this.#images) throw new Error("the NBD server is not running");
    return this.#images.prepare(entry, mac, ip);
  }

  async #localPath(ref: FileRef): Promise<{ path: string; etag?: string }> {
    if (ref.path) return { path: ref.path };
    const cached = await this.#remote.get(ref.url as string, ref.sha256).catch((err: unknown) => {
      throw new HttpError(502, (err as Error).message);
    });
    return { path: cached.path, etag: cached.sha256 };
  }

  async #file(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    name: string,
    initrd: number,
  ): Promise<void> {
    const entry = this.config.entries.get(name);
    if (entry?.kind === "iso") return this.#isoBootFile(req, res, url, entry, initrd);
    if (entry?.kind !== "kernel" && entry?.kind !== "image") {
      throw new HttpError(404, `No kernel entry named "${name}"`);
    }
    const overlay =
      entry.kind === "image" && entry.nbdOverlay && initrd === entry.initrd.length
        ? this.#nbdOverlayPath
        : null;
    const ref = initrd < 0 ? entry.kernel : overlay ? { path: overlay } : entry.initrd[initrd];
    if (!ref) throw new HttpError(404, `Entry "${name}" has no initrd ${initrd}`);
    const ip = this.#clientIp(req);
    const mac = macFromQuery(url.searchParams.get("mac")) ?? this.events.macForIp(ip);
    const stage = initrd < 0 ? "http-kernel" : "http-initrd";
    const { path, etag } = await this.#localPath(ref);
    // A one-shot entry is used up when its kernel is fetched (before the reply, so the
    // machine's next request already sees it).
    if (initrd < 0 && entry.once && mac) await this.#once?.consume(mac, name);
    const started = Date.now();
    const bytes = await sendFile(req, res, path, { etag, cacheControl: "no-cache" });
    if (bytes < 0) {
      this.#record({ stage: `${stage}-missing`, mac, ip, entry: name, file: path });
      throw new HttpError(404, `The file ${path} of entry "${name}" does not exist on the server`);
    }
    if (initrd < 0 && entry.once && mac) await this.#once?.consume(mac, name);
    this.#record({
      stage,
      mac,
      ip,
      entry: name,
      file: ref.url ?? ref.path,
      bytes,
      ms: Date.now() - started,
    });
  }

  /** The entry's ISO, opened on first use (a failure is not kept: the next boot tries again). */
  #liveIso(entry: Extract<Entry, { kind: "iso" }>): Promise<LiveIso> {
    let p = this.#isos.get(entry.name);
    if (!p) {
      p = LiveIso.open(entry.iso, {
        cacheDir: join(this.config.cacheDir, "iso"),
        family: entry.recipe,
        kernel: entry.kernel,
        initrd: entry.initrd,
        cmdline: entry.cmdline,
        logger: this.#log,
      });
      this.#isos.set(entry.name, p);
      p.then(
        (iso) =>
          this.#log.info(
            {
              entry: entry.name,
              iso: entry.iso,
              family: iso.recipe.family,
              kernel: iso.recipe.kernel,
              initrd: iso.recipe.initrd,
            },
            "ISO opened",
          ),
        () => this.#isos.delete(entry.name),
      );
    }
    return p;
  }

  /** An ISO entry's kernel or initrd: extracted from the ISO by range, verified, cached. */
  async #isoBootFile(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    entry: Extract<Entry, { kind: "iso" }>,
    initrd: number,
  ): Promise<void> {
    const ip = this.#clientIp(req);
    const mac = macFromQuery(url.searchParams.get("mac")) ?? this.events.macForIp(ip);
    const stage = initrd < 0 ? "http-kernel" : "http-initrd";
    let file;
    let isoPath: string | undefined;
    try {
      const live = await this.#liveIso(entry);
      isoPath = initrd < 0 ? live.recipe.kernel : live.recipe.initrd[initrd];
      if (isoPath === undefined)
        throw new HttpError(404, `Entry "${entry.name}" has no initrd ${initrd}`);
      file = await live.extract(isoPath);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      const message = (err as Error).message;
      this.#record({ stage: `${stage}-error`, mac, ip, entry: entry.name, detail: message });
      throw new HttpError(502, message);
    }
    if (initrd < 0 && entry.once && mac) await this.#once?.consume(mac, entry.name);
    const started = Date.now();
    const bytes = await sendFile(req, res, file.path, {
      etag: file.sha256,
      cacheControl: "no-cache",
    });
    this.#record({
      stage,
      mac,
      ip,
      entry: entry.name,
      file: `${entry.iso}:${isoPath}`,
      bytes,
      ms: Date.now() - started,
    });
  }

  /** /iso/ENTRY/NAME.iso and /iso/ENTRY/tree/PATH: what the booted live system fetches. */
  async #isoFile(
    req: IncomingMessage,
    res: ServerResponse,
    name: string,
    rest: string,
  ): Promise<void> {
    const entry = this.config.entries.get(name);
    if (entry?.kind !== "iso") throw new HttpError(404, `No ISO entry named "${name}"`);
    const live = await this.#liveIso(entry).catch((err: unknown) => {
      throw new HttpError(502, `cannot open ${entry.iso}: ${(err as Error).message}`);
    });
    const ip = this.#clientIp(req);
    const started = Date.now();
    const bytes = await live.send(req, res, rest);
    if (bytes < 0) throw new HttpError(404, `${entry.iso} has no file ${decodeURIComponent(rest)}`);
    this.#record({
      stage: "http-iso",
      mac: this.events.macForIp(ip),
      ip,
      entry: name,
      file: decodeURIComponent(rest),
      bytes,
      ms: Date.now() - started,
    });
  }

  async #isoStats(): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for (const [entry, p] of this.#isos) {
      const iso = await p.catch(() => null);
      if (!iso) continue;
      out.push({
        entry,
        iso: iso.source,
        size: iso.device.size,
        family: iso.recipe.family,
        kernel: iso.recipe.kernel,
        initrd: iso.recipe.initrd,
        cache: iso.cacheStats,
      });
    }
    return out;
  }

  /** The machines with what each boots next (for the API and the pages). */
  #machineRows(): MachineRow[] {
    return this.events.machines().map((m) => ({ ...m, next: this.#nextFor(m.mac) }));
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
    const send = (e: { seq: number }): void => {
      res.write(`id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    res.write("retry: 2000\n\n");
    for (const e of this.events.events({ since, mac })) send(e);
    const unsubscribe = this.events.subscribe((e) => {
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
        this.#send(res, 200, machineRows(this.#machineRows()).text, htmlType);
      } else this.#send(res, 200, machinesPage(this.#machineRows()), htmlType);
      return;
    }
    const m = /^\/ui\/machines\/([^/]+)$/.exec(path);
    if (m) {
      const mac = macFromQuery(decodeURIComponent(m[1]));
      if (!mac) throw new HttpError(404, `"${m[1]}" is not a MAC address`);
      const row = this.#machineRows().find((r) => r.mac === mac);
      this.#send(res, 200, machinePage(mac, row, this.events.events({ mac })), htmlType);
      return;
    }
    if (path === "/ui/catalog") {
      this.#send(res, 200, catalogPage(this.config), htmlType);
      return;
    }
    if (path === "/ui/images") {
      const [images, isos] = await Promise.all([this.#imageViews(), this.#isoViews()]);
      this.#send(res, 200, imagesPage(images, isos, this.config.ui.write), htmlType);
      return;
    }
    if (path === "/ui/cache") {
      this.#send(res, 200, cachePage(await this.#cacheView()), htmlType);
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
    return [...this.config.entries.values()].filter((e) => e.kind === "image");
  }

  async #imageViews(): Promise<ImageView[]> {
    const opened = new Map(
      ((await this.#images?.opened()) ?? []).map((o) => [o.entry, o.stack.label]),
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
          pinned: this.#images?.pin(e.name) ?? null,
          open: opened.get(e.name) ?? null,
          releases,
          error,
        };
      }),
    );
  }

  async #isoViews(): Promise<IsoView[]> {
    const out: IsoView[] = [];
    for (const e of this.config.entries.values()) {
      if (e.kind !== "iso") continue;
      const iso = await this.#isos.get(e.name)?.catch(() => null);
      out.push({
        entry: e.name,
        iso: e.iso,
        family: iso?.recipe.family ?? null,
        cachedBytes: iso ? (iso.cacheStats?.cachedBytes ?? iso.device.size) : null,
        size: iso?.device.size ?? null,
      });
    }
    return out;
  }

  async #cacheView(): Promise<CacheView> {
    const opened = (await this.#images?.opened()) ?? [];
    const cache = opened.find((o) => o.stack.cache)?.stack.cache ?? null;
    const view: CacheView = {
      dir: this.config.cacheDir,
      bytes: cache?.totalBytes ?? null,
      chunks: cache?.chunkCount ?? null,
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
        });
      }
      for (const m of o.stack.mirrorStats()) view.mirrors.push({ entry: o.entry, ...m });
    }
    for (const [entry, p] of this.#isos) {
      const c = (await p.catch(() => null))?.cacheStats;
      if (c) view.isos.push({ entry, ...c });
    }
    return view;
  }

  /** POST /ui/images/ENTRY/pin: roll an image entry back to a release (or to the latest). */
  async #pinAction(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    const refuse = (status: number, message: string): void => {
      this.#log.warn(
        { entry: name, ip: this.#clientIp(req), reason: message },
        "write action refused",
      );
      this.#send(
        res,
        status,
        page(
          "Refused",
          "/ui/images",
          html`<h1>Refused</h1>
            <p class="bad">${message}</p>
            <p><a href="/ui/images">Back to the images</a></p>`,
        ),
        "text/html; charset=utf-8",
      );
    };
    const body = await readBody(req, 4096).catch(() => null);
    if (body === null) return refuse(413, "The form is too large.");
    if (!this.config.ui.write || !this.config.ui.token) {
      return refuse(403, "Write actions are off on this server (ui.write in the configuration).");
    }
    const form = new URLSearchParams(body);
    if (!sameSecret(form.get("token") ?? "", this.config.ui.token)) {
      return refuse(403, "Wrong or missing token.");
    }
    const entry = this.config.entries.get(name);
    if (entry?.kind !== "image" || !this.#images) return refuse(404, `No image entry ${name}.`);
    const release = form.get("release") ?? "";
    if (release === "latest") {
      await this.#images.setPin(entry, null);
    } else {
      const known = (await this.#listing(entry)).some((r) => r.digest === release);
      if (!/^[0-9a-f]{64}$/.test(release) || !known) {
        return refuse(400, `${release} is not a release of ${entry.image.source} in its store.`);
      }
      await this.#images.setPin(entry, release);
    }
    this.#record({ stage: "ui-pin", entry: name, ip: this.#clientIp(req), detail: release });
    res.writeHead(303, { Location: "/ui/images" }).end();
  }

  /** Families read from the servers' own counters at scrape time. */
  async #scrape(): Promise<Family[]> {
    const out: Family[] = [];
    if (this.#dhcp) {
      const d = this.#dhcp.stats;
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
    if (this.#tftp) {
      const t = this.#tftp.stats;
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
    if (this.#nbd) {
      const n = this.#nbd.stats;
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
    const opened = (await this.#images?.opened()) ?? [];
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
    for (const [entry, p] of this.#isos) {
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

  #indexText(): string {
    const c = this.config;
    const lines = [
      "inetboot boot server",
      "",
      `configuration: ${c.source}`,
      `iPXE boot script: ${this.baseUrl}/boot.ipxe`,
      `DHCP: ${c.dhcp.mode}${c.listen.interface ? ` on ${c.listen.interface}` : ""}`,
      `TFTP: ${c.tftp.enabled ? `port ${this.tftpPort}` : "off"}`,
      `entries: ${[...c.entries.keys()].join(", ")}`,
      `default: ${c.default}`,
      "",
      `dashboard: ${this.baseUrl}/ui/machines`,
      "API: /api/machines /api/events /api/events/stream /api/images /api/images/ENTRY/profile /api/config /metrics",
    ];
    for (const w of c.warnings) lines.push(`warning: ${w}`);
    return lines.join("\n") + "\n";
  }
}
