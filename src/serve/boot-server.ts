// `inetboot serve`: DHCP (full or proxy), TFTP and HTTP in one process, answering boot firmware
// with the right first stage and each machine with its boot plan, and recording every stage.
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, join } from "node:path";
import { openChunkCache } from "../block/chunk-cache.ts";
import { buildNbdOverlay, nbdOverlayCmdline, nbdRootCmdline } from "../boot/nbd-overlay.ts";
import { firmwareKey } from "../dhcp/firmware.ts";
import { LeaseDb } from "../dhcp/leases.ts";
import { RateLimitedLog } from "../lib/rate-limited-log.ts";
import { DhcpServer } from "../dhcp/server.ts";
import type { BootAnswer, DhcpClient } from "../dhcp/server.ts";
import { RemoteFileCache } from "../http/file-cache.ts";
import { sendFile } from "../http/send-file.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { interfaceAddress, interfaceIndex } from "../net/interface.ts";
import { NbdServer } from "../nbd/server.ts";
import { TftpServer } from "../tftp/server.ts";
import { VirtualTree } from "../tftp/tree.ts";
import type { Entry, FileRef, ServeConfig } from "./config.ts";
import { EventLog } from "./events.ts";
import type { EventInput } from "./events.ts";
import { redactedExport } from "./export-tickets.ts";
import { ImageExports } from "./image-exports.ts";
import { LiveIso, LiveIsoError } from "../iso/live-iso.ts";
import { bootScript, entryScript, errorScript, waitScript } from "./ipxe-script.ts";
import { OnceState } from "./once.ts";
import { Dashboard } from "./dashboard.ts";
import { clientIp, HttpError, macFromQuery, send } from "./http-util.ts";
import { Metrics } from "./metrics.ts";
import { LoopDelay } from "./server-health.ts";
import type { MachineRow } from "./ui/pages.ts";
import { chooseEntry, firmwareArchNames, ipxeArchNames } from "./plan.ts";
import { baseFromHost, requestFacts } from "./request-facts.ts";
import type { Choice, MachineFacts } from "./plan.ts";

/** How long a boot script request waits for an ISO being opened before it says "wait". */
const ISO_WAIT_MS = 3000;
/** Time a client has to send its request headers, and its whole request. */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;
/** Open HTTP connections; past it new ones are closed at once (no file descriptor runs out). */
export const MAX_HTTP_CONNECTIONS = 2048;

export interface BootServerOptions {
  logger?: Logger;
}

/** The route family of a request path, for metrics (bounded label values). */
function routeLabel(url: string): string {
  const path = url.replace(/\?.*$/, "");
  if (path === "/" || path === "/boot.ipxe" || path === "/metrics" || path === "/healthz")
    return path;
  const m = /^\/(ipxe\/boot|ipxe\/entry|files|iso|firmware|api|ui)(\/|$)/.exec(path);
  return m ? `/${m[1]}` : "other";
}

export class BootServer {
  readonly config: ServeConfig;
  readonly events = new EventLog();
  readonly metrics = new Metrics();
  readonly #loop = new LoopDelay();
  readonly #dashboard: Dashboard;
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
  /** How far the check of an ISO against its sha256 is, while it runs. */
  readonly #isoProgress = new Map<string, { done: number; total: number }>();
  /** Why an ISO entry's last opening failed (until it opens), for the dashboard. */
  readonly #isoErrors = new Map<string, string>();
  readonly #remote: RemoteFileCache;
  /** Null prototype: a request for /firmware/constructor finds nothing, not Object's. */
  readonly #firstStageFiles: Record<string, string> = Object.create(null) as Record<string, string>;
  #leases: LeaseDb | undefined;
  /** Refused plans are logged at most once per interval per address. */
  readonly #refusals = new RateLimitedLog();

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
    this.#dashboard = new Dashboard({
      config,
      loop: this.#loop,
      events: this.events,
      metrics: this.metrics,
      log: this.#log,
      machineRows: () => this.#machineRows(),
      record: (input) => this.#record(input),
      images: () => this.#images,
      isos: this.#isos,
      isoProgress: this.#isoProgress,
      isoErrors: this.#isoErrors,
      dhcp: () => this.#dhcp,
      tftp: () => this.#tftp,
      nbd: () => this.#nbd,
    });
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
    this.#leases = leases;
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
    // DHCP answers whoever sends a MAC: the name goes out only where it opens nothing by
    // itself (nbd.allow: machine binds it to the address that asked for the plan).
    if (entry?.kind !== "image" || !this.#images || this.config.nbd.allow === "any")
      return undefined;
    const name = this.#images.currentExport(entry.name, client.mac);
    return name ? `${this.#address}:${this.#nbdPort}/${name}` : undefined;
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
    // Bounds for what anyone on the LAN can open (docs/serve.md, "Limits").
    server.headersTimeout = HTTP_HEADERS_TIMEOUT_MS;
    server.requestTimeout = HTTP_REQUEST_TIMEOUT_MS;
    server.maxHeadersCount = 100;
    server.maxConnections = MAX_HTTP_CONNECTIONS;
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
    const nbd = new NbdServer({
      exports: [],
      defaultExport: false,
      logger: this.#log,
      logName: redactedExport, // the token in a boot's export name stays out of the logs
    });
    const host = c.listen.interface ? "0.0.0.0" : this.#address;
    const bound = await nbd.listen({ host, port: c.nbd.port });
    this.#nbd = nbd;
    this.#nbdPort = "port" in bound ? bound.port : 0;
    this.#images = new ImageExports({
      nbd,
      stateDir: c.stateDir,
      cacheDir: c.cacheDir,
      allow: c.nbd.allow,
      entries: [...c.entries.values()].filter((e) => e.kind === "image"),
      onNewRelease: (entry) =>
        this.metrics.inc(
          "inetboot_image_release_changes_total",
          "Image entries moved to a newer release while the server ran",
          { entry },
        ),
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

  /** The image entries' exports (null until the NBD server runs). */
  get images(): ImageExports | null {
    return this.#images;
  }

  get nbdPort(): number {
    return this.#nbdPort;
  }

  async stop(): Promise<void> {
    this.#loop.close();
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

  /** The base URL for links in a reply: the Host the client used, if it is a valid one. */
  #base(req: IncomingMessage): string {
    if (this.config.http.publicUrl) return this.config.http.publicUrl;
    return baseFromHost(req.headers.host) ?? this.baseUrl;
  }

  #facts(url: URL, req: IncomingMessage): MachineFacts {
    return requestFacts(url.searchParams, this.events.macForIp(clientIp(req)));
  }

  /**
   * Why a plan for `mac` asked from `ip` is refused, or null. With our own DHCP (full mode) the
   * server knows who holds which address: an address holding a lease speaks only for its MAC,
   * and a MAC holding a lease is spoken for only from its address. (In proxy mode, and for
   * addresses and MACs without a lease, the MAC is taken as given: see docs/serve.md.)
   */
  #macRefusal(mac: string | undefined, ip: string): string | null {
    const leases = this.#leases;
    if (!leases || !mac) return null;
    const holder = leases.holderOf(ip);
    if (holder !== undefined) {
      return holder === mac ? null : `${ip} holds the DHCP lease of ${holder}, not of ${mac}`;
    }
    const at = leases.addressOf(mac);
    return at !== undefined && at !== ip ? `${mac} holds the DHCP lease of ${at}, not ${ip}` : null;
  }

  /** Sends the refusal when the plan's MAC is not the requester's; true if it did. */
  #refusedMac(req: IncomingMessage, res: ServerResponse, mac: string | undefined): boolean {
    const ip = clientIp(req);
    const why = this.#macRefusal(mac, ip);
    if (!why) return false;
    // Recorded without the MAC: the claim must not touch the real machine's record.
    this.#record({ stage: "plan-refused", ip, detail: `plan for ${mac}: ${why}` });
    this.#refusals.hit(ip, (suppressed) =>
      this.#log.warn(
        { ip, mac, reason: why, suppressed },
        "plan request refused: the MAC is not this address's",
      ),
    );
    send(res, 403, errorScript(`refused: ${why}`), "text/plain; charset=utf-8");
    return true;
  }

  #json(res: ServerResponse, value: unknown): void {
    send(res, 200, JSON.stringify(value, null, 1) + "\n", "application/json");
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname;
    if (await this.#dashboard.handle(req, res, url)) return;
    if (req.method !== "GET" && req.method !== "HEAD") {
      throw new HttpError(405, `${req.method} is not supported here`);
    }
    const ip = clientIp(req);
    if (path === "/boot.ipxe") {
      const facts = this.#facts(url, req);
      this.#record({ stage: "http-boot-script", mac: facts.mac, ip });
      send(res, 200, bootScript(this.#base(req), facts.labels), "text/plain; charset=utf-8");
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
    if (m && Object.hasOwn(this.#firstStageFiles, m[1])) {
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
      send(res, 200, text, "text/plain; charset=utf-8");
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
      send(res, 200, "ok\n", "text/plain");
      return;
    }
    if (path === "/") {
      send(res, 200, this.#indexText(), "text/plain; charset=utf-8");
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

  async #plan(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const facts = this.#facts(url, req);
    if (this.#refusedMac(req, res, facts.mac)) return;
    const choice = this.#resolveOnce(chooseEntry(this.config, facts), facts.mac);
    const entry = this.config.entries.get(choice.entry) as Entry;
    const q = url.searchParams;
    this.#record(
      {
        stage: "http-plan",
        mac: facts.mac,
        ip: clientIp(req),
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

  async #entry(req: IncomingMessage, res: ServerResponse, url: URL, name: string): Promise<void> {
    const entry = this.config.entries.get(name);
    if (!entry) throw new HttpError(404, `No entry named "${name}" in ${this.config.source}`);
    const facts = this.#facts(url, req);
    if (this.#refusedMac(req, res, facts.mac)) return;
    this.#record({
      stage: "http-entry",
      mac: facts.mac,
      ip: clientIp(req),
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
      const ip = clientIp(req);
      if (!mac) {
        send(
          res,
          200,
          errorScript(`${entry.name} needs the machine's MAC (chain /boot.ipxe)`),
          text,
        );
        return;
      }
      try {
        const host = new URL(this.#base(req)).hostname;
        const name = await this.#imageExport(entry, mac, ip);
        rootCmdline = entry.nbdOverlay
          ? nbdOverlayCmdline(host, this.#nbdPort, name)
          : nbdRootCmdline(host, this.#nbdPort, name);
        const stays = this.#images?.staysOn(entry.name, mac);
        this.#record({
          stage: "nbd-export",
          mac,
          ip,
          entry: entry.name,
          // The token is the machine's: events and logs show only its start.
          detail: `${redactedExport(name)}${stays ? ` (its disk stays on ${stays}, where it was made)` : ""}`,
        });
      } catch (err) {
        const message = `cannot open image ${entry.image.source}: ${(err as Error).message}`;
        this.#record({ stage: "image-error", mac, ip, entry: entry.name, detail: message });
        this.#log.error(
          { entry: entry.name, err: (err as Error).message },
          "image cannot be opened",
        );
        send(res, 200, errorScript(message), text);
        return;
      }
    }
    let iso: { initrds: number; cmdline: string; sanboot?: string } | undefined;
    if (entry.kind === "iso") {
      try {
        let timer: NodeJS.Timeout | undefined;
        const live = await Promise.race([
          this.#liveIso(entry),
          new Promise<null>((r) => (timer = setTimeout(() => r(null), ISO_WAIT_MS))),
        ]).finally(() => clearTimeout(timer));
        if (live === null) {
          // Still opening (checking the whole ISO against its sha256, or a slow origin): the
          // machine waits in iPXE and asks again, instead of an HTTP request timing out.
          const p = this.#isoProgress.get(entry.name);
          const message = p
            ? `checking ${entry.name}'s ISO against its ${entry.signature ? "signature" : "sha256"}: ${Math.floor((100 * p.done) / Math.max(1, p.total))}% of ${Math.round(p.total / 1e6)} MB`
            : `opening ${entry.name}'s ISO`;
          send(
            res,
            200,
            waitScript(message, `${this.#base(req)}${url.pathname}${url.search}`, 5),
            text,
          );
          return;
        }
        const isoBase = `${this.#base(req)}/iso/${encodeURIComponent(entry.name)}`;
        iso = {
          initrds: live.recipe.initrd.length,
          cmdline: live.cmdline(isoBase),
          sanboot:
            live.recipe.family === "cdrom"
              ? `${isoBase}/${encodeURIComponent(live.fileName)}`
              : undefined,
        };
        // Nothing else marks this boot as used: a sanboot fetches no kernel.
        if (live.recipe.family === "cdrom" && entry.once && mac) {
          await this.#once?.consume(mac, entry.name);
        }
      } catch (err) {
        const found = err instanceof LiveIsoError ? err.found : [];
        const message = `cannot boot ${entry.iso}: ${(err as Error).message}`;
        const ip = clientIp(req);
        this.#record({ stage: "iso-error", mac, ip, entry: entry.name, detail: message });
        this.#log.error({ entry: entry.name, err: message, found }, "ISO cannot be booted");
        const listing = found.length
          ? `; the ISO holds ${found.slice(0, 40).join(" ")}${found.length > 40 ? " …" : ""}`
          : "";
        send(res, 200, errorScript(message + listing), text);
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
    send(res, 200, script, text);
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
    const ip = clientIp(req);
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
        sha256: entry.sha256,
        checksums: entry.checksums,
        signature: entry.signature,
        onVerifyProgress: (done, total) => this.#isoProgress.set(entry.name, { done, total }),
        cacheDir: join(this.config.cacheDir, "iso"),
        space: openChunkCache(this.config.cacheDir, { logger: this.#log }),
        family: entry.recipe,
        cdromFallback: true,
        kernel: entry.kernel,
        initrd: entry.initrd,
        cmdline: entry.cmdline,
        logger: this.#log,
      });
      this.#isos.set(entry.name, p);
      p.then(
        (iso) => {
          this.#isoOpens(entry.name, "opened");
          this.#isoErrors.delete(entry.name);
          this.#log.info(
            {
              entry: entry.name,
              iso: entry.iso,
              family: iso.recipe.family,
              kernel: iso.recipe.kernel,
              initrd: iso.recipe.initrd,
            },
            "ISO opened",
          );
        },
        (err: Error) => {
          this.#isoOpens(entry.name, "refused");
          this.#isoErrors.set(entry.name, err.message);
          this.#isos.delete(entry.name);
        },
      );
      void p.finally(() => this.#isoProgress.delete(entry.name)).catch(() => undefined);
    }
    return p;
  }

  #isoOpens(entry: string, result: "opened" | "refused"): void {
    this.metrics.inc(
      "inetboot_iso_opens_total",
      "ISO entries opened (layout read, checks passed) or refused (checks failed, unreadable), by entry",
      { entry, result },
    );
  }

  /** An ISO entry's kernel or initrd: extracted from the ISO by range, verified, cached. */
  async #isoBootFile(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    entry: Extract<Entry, { kind: "iso" }>,
    initrd: number,
  ): Promise<void> {
    const ip = clientIp(req);
    const mac = macFromQuery(url.searchParams.get("mac")) ?? this.events.macForIp(ip);
    const stage = initrd < 0 ? "http-kernel" : "http-initrd";
    let file;
    let isoPath: string | undefined;
    try {
      const live = await this.#liveIso(entry);
      if (live.recipe.family === "cdrom") {
        throw new HttpError(
          404,
          `Entry "${entry.name}" boots its ISO as a CD-ROM (sanboot): it has no kernel or initrd`,
        );
      }
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
    const ip = clientIp(req);
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
