// `inetboot serve`: DHCP (full or proxy), TFTP, HTTP and NBD in one process, answering boot
// firmware with the right first stage and each machine with its boot plan. Wiring only: the
// routes (http-routes.ts) and their handlers, the entry kinds (entries/), the exports
// (image-exports.ts) and ISOs (iso-entries.ts) do the work.
import { mkdir, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, join } from "node:path";
import { buildNbdOverlay } from "../boot/nbd-overlay.ts";
import type { LeaseDb } from "../dhcp/leases.ts";
import type { DhcpServer } from "../dhcp/server.ts";
import { RemoteFileCache } from "../http/file-cache.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { interfaceAddress } from "../net/interface.ts";
import { NbdServer } from "../nbd/server.ts";
import { TftpServer } from "../tftp/server.ts";
import { VirtualTree } from "../tftp/tree.ts";
import { ApiRoutes } from "./api-routes.ts";
import { bootRecorder } from "./boot-record.ts";
import type { Entry, ServeConfig } from "./config.ts";
import { loaderFileNames } from "./config/loaders.ts";
import { changesText, configChanges } from "./config-diff.ts";
import type { ConfigChanges } from "./config-diff.ts";
import { Dashboard } from "./dashboard.ts";
import { DashboardViews } from "./dashboard-views.ts";
import { startDhcp } from "./dhcp-side.ts";
import { EventLog } from "./events.ts";
import { redactedExport } from "./export-tickets.ts";
import { listenHttp } from "./http-front.ts";
import { FirstStageWatch } from "./first-stage-watch.ts";
import { GrubTftpTree } from "./grub-tftp.ts";
import { bootServerRoutes } from "./http-routes.ts";
import { ImageExports } from "./image-exports.ts";
import { IsoEntries } from "./iso-entries.ts";
import { MachinePlans } from "./machine-plans.ts";
import { MachineRoutes } from "./machine-routes.ts";
import { renderFamilies, Metrics } from "./metrics.ts";
import { imageMetrics, scrapeFamilies } from "./metrics-scrape.ts";
import { OnceState } from "./once.ts";
import { PeopleAuth } from "./people-auth.ts";
import { RouteTable } from "./routes.ts";
import { MachineRegistry } from "./machine-registry.ts";
import { RegistryRoutes } from "./registry-routes.ts";
import { LoopDelay } from "./server-health.ts";

/** A configuration the running server cannot take (it keeps the one it has). */
export class ReloadRefused extends Error {}

export interface BootServerOptions {
  logger?: Logger;
}

export class BootServer {
  #config: ServeConfig;
  readonly events = new EventLog();
  readonly metrics = new Metrics();
  readonly routes: RouteTable;
  readonly #loop = new LoopDelay();
  readonly #log: Logger;
  readonly #address: string;
  readonly #record: ReturnType<typeof bootRecorder>;
  readonly #isos: IsoEntries;
  #http: Server | null = null;
  #tftp: TftpServer | null = null;
  #dhcp: DhcpServer | null = null;
  #leases: LeaseDb | undefined;
  #once: OnceState | null = null;
  #registry: MachineRegistry | null = null;
  #reloader: (() => Promise<string>) | null = null;
  #nbd: NbdServer | null = null;
  #nbdPort = 0;
  #nbdOverlayPath: string | null = null;
  #images: ImageExports | null = null;
  readonly #plans: MachinePlans;
  readonly #firstStageWatch: FirstStageWatch;
  /** Null prototype: a request for /firmware/constructor finds nothing, not Object's. */
  readonly #firstStages = Object.create(null) as Record<string, string>;

  constructor(config: ServeConfig, options: BootServerOptions = {}) {
    this.#config = config;
    // What the parts read per request comes through here: a reload swaps it for all of them.
    const live = (): ServeConfig => this.#config;
    const log = (this.#log = options.logger ?? silentLogger);
    const fromInterface = config.listen.interface
      ? interfaceAddress(config.listen.interface)?.address
      : undefined;
    this.#address = config.listen.address ?? fromInterface ?? "127.0.0.1";
    Object.assign(this.#firstStages, config.tftp.ipxeFiles);
    for (const path of Object.values(config.tftp.firstStages)) {
      this.#firstStages[basename(path)] = path;
    }
    // shimx64.efi, grubx64.efi, shimaa64.efi, grubaa64.efi: the names shim and firmware ask for.
    Object.assign(this.#firstStages, loaderFileNames(config.loaders));
    const record = (this.#record = bootRecorder(this.events, this.metrics, log));
    this.#firstStageWatch = new FirstStageWatch({
      machine: (mac) => this.events.machine(mac),
      record,
    });
    const isos = (this.#isos = new IsoEntries({
      cacheDir: config.cacheDir,
      stateDir: config.stateDir,
      nbd: () => this.#nbd,
      logger: log,
      onOpen: (entry, result) =>
        this.metrics.inc(
          "inetboot_iso_opens_total",
          "ISO entries opened (layout read, checks passed) or refused (checks failed, unreadable), by entry",
          { entry, result },
        ),
    }));
    const images = (): ImageExports | null => this.#images;
    const once = (): OnceState | null => this.#once;
    const registry = (): MachineRegistry | null => this.#registry;
    const auth = new PeopleAuth(live, this.metrics, log);
    const api = new ApiRoutes({
      get config() {
        return live();
      },
      ...{ events: this.events, images, isos, once },
      baseUrl: () => this.baseUrl,
      tftpPort: () => this.tftpPort,
      choose: (facts) => this.#plans.choose(facts),
      registry,
    });
    const plans = (this.#plans = new MachinePlans({
      get config() {
        return live();
      },
      ...{ events: this.events, log, record, images, isos, once, registry },
      leases: () => this.#leases,
      nbdPort: () => this.#nbdPort,
      remote: new RemoteFileCache(join(config.stateDir, "files"), log),
      nbdOverlay: () => this.#nbdOverlayPath,
      baseUrl: () => this.baseUrl,
    }));
    const machine = new MachineRoutes({ plans, firstStages: this.#firstStages });
    const views = new DashboardViews(live, images, isos);
    const dashboard = new Dashboard({
      get config() {
        return live();
      },
      ...{ events: this.events, record, images, auth, registry },
      machineRows: () => api.machineRows(),
      views,
    });
    const v1 = new RegistryRoutes({
      get config() {
        return live();
      },
      ...{ registry, images, record, auth, log },
      reload: () => this.#reloader?.() ?? null,
      listing: (entry) => views.listing(entry),
    });
    const metrics = async (): Promise<string> =>
      renderFamilies([
        ...this.metrics.families(),
        ...(await scrapeFamilies({
          ...{ loop: this.#loop, images, isos },
          dhcp: () => this.#dhcp,
          tftp: () => this.#tftp,
          nbd: () => this.#nbd,
        })),
      ]);
    this.routes = new RouteTable(bootServerRoutes({ machine, api, v1, dashboard, metrics }), {
      allowPeople: (req, res) => auth.readAllowed(req, res),
      log,
    });
  }

  /** The configuration in use (a reload swaps it). */
  get config(): ServeConfig {
    return this.#config;
  }

  /**
   * Takes a new configuration without a restart: new plans, menus, rules and templates use it;
   * transfers, NBD connections and the disks of running boots keep what they have, and an image
   * or ISO entry that changed is opened again for the next boots only. A change the running
   * sockets and folders cannot take (listen, dhcp, tftp, http, nbd, state, cache, loaders) is
   * refused with a ReloadRefused and the running configuration stays.
   */
  async reload(next: ServeConfig): Promise<ConfigChanges> {
    const changes = configChanges(this.#config, next);
    if (changes.restart.length) {
      throw new ReloadRefused(
        `${next.source}: ${changes.restart.join(", ")} changed, which needs a restart (inetboot serve keeps the running configuration)`,
      );
    }
    const exported = (e: Entry): boolean => e.kind === "image" || (e.kind === "iso" && e.lazy);
    const old = this.#config;
    this.#config = next;
    try {
      // The first image or lazy ISO entry: the NBD server starts now.
      if (!this.#nbd && [...next.entries.values()].some(exported)) await this.#startNbd();
      else if (this.#nbd) await this.#ensureNbdOverlay();
    } catch (err) {
      this.#config = old;
      throw new ReloadRefused(`${next.source}: ${(err as Error).message}`);
    }
    for (const name of [...changes.changed, ...changes.removed]) {
      this.#isos.forget(name);
      this.#images?.forgetEntry(name);
    }
    this.#images?.setEntries([...next.entries.values()].filter((e) => e.kind === "image"));
    this.#record({ stage: "config-reload", detail: changesText(changes) });
    this.#log.info({ source: next.source, ...changes }, "configuration reloaded");
    return changes;
  }

  /** How the API's reload reads the configuration again (set by `inetboot serve --config`). */
  setReloader(reload: () => Promise<string>): void {
    this.#reloader = reload;
  }

  /** The machine registry (STATE/machines.json), once started. */
  get registry(): MachineRegistry | null {
    return this.#registry;
  }

  /** Records a reload that was refused (its problems), for the log, events and dashboard. */
  reloadRefused(source: string, problems: string[]): void {
    this.#record({ stage: "config-refused", detail: `${source}: ${problems.join("; ")}` });
    this.#log.warn({ source, problems }, "configuration refused; the running one stays");
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

  get nbdPort(): number {
    return this.#nbdPort;
  }

  /** The image entries' exports (null until the NBD server runs). */
  get images(): ImageExports | null {
    return this.#images;
  }

  /** The base URL handed to machines in DHCP answers. */
  get baseUrl(): string {
    return this.config.http.publicUrl ?? `http://${this.#address}:${this.httpPort}`;
  }

  /** Starts every configured part; if one cannot start, the others are stopped again. */
  async start(): Promise<void> {
    try {
      const c = this.config;
      this.#once = await OnceState.open(join(c.stateDir, "once.json"));
      this.#registry = await MachineRegistry.open(join(c.stateDir, "machines.json"));
      await this.#startHttp();
      if (c.tftp.enabled) await this.#startTftp();
      // Image entries' disks and lazy ISO entries' ISOs are NBD exports.
      const exported = (e: Entry): boolean => e.kind === "image" || (e.kind === "iso" && e.lazy);
      if ([...c.entries.values()].some(exported)) await this.#startNbd();
      if (c.dhcp.mode !== "off") {
        const live = (): ServeConfig => this.#config;
        ({ server: this.#dhcp, leases: this.#leases } = await startDhcp({
          get config() {
            return live();
          },
          ...{ address: this.#address, log: this.#log, record: this.#record },
          baseUrl: () => this.baseUrl,
          tftp: this.#tftp !== null,
          images: () => this.#images,
          nbdPort: () => this.#nbdPort,
          firstStages: this.#firstStageWatch,
          choose: (facts) => this.#plans.choose(facts),
          registeredHostname: (mac) => this.#registry?.get(mac)?.hostname,
        }));
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async #startTftp(): Promise<void> {
    const c = this.config;
    this.#tftp = new TftpServer({
      // GRUB's configs and the entries' files first, then first stages and the TFTP root.
      tree: new GrubTftpTree(new VirtualTree(c.tftp.root ?? null, this.#firstStages), this.#plans),
      port: c.tftp.port,
      address: c.listen.interface ? "0.0.0.0" : this.#address,
      interface: c.listen.interface,
      maxBlksize: c.tftp.maxBlksize,
      maxWindowsize: c.tftp.maxWindowsize,
      logger: this.#log,
      onEvent: (e) => {
        const ip = e.client.split(":")[0];
        const { stage, file, bytes, ms } = e;
        // What the transfer negotiated, on its start (GRUB: 1 KiB lock-step; iPXE: larger).
        const options = e.blksize ? `blksize ${e.blksize}, windowsize ${e.windowsize ?? 1}` : "";
        const detail = e.error ?? (stage === "tftp-start" ? options : undefined);
        const mac = this.events.macForIp(ip);
        this.#record({ stage, mac, ip, file, bytes, ms, detail });
        if (stage === "tftp-done" && file) this.#firstStageWatch.transferDone(mac, file);
      },
    });
    await this.#tftp.start();
  }

  async #startHttp(): Promise<void> {
    this.#http = await listenHttp(this.routes, this.metrics, this.config.http);
  }

  /**
   * Builds the NBD overlay once from this server's nbd-client when an image entry may need it;
   * a missing nbd-client stops the start (or a reload) with the fix when an entry asks for the
   * overlay, and is logged when one may need it (auto).
   */
  async #ensureNbdOverlay(): Promise<void> {
    const c = this.config;
    const images = [...c.entries.values()].filter((e) => e.kind === "image");
    if (this.#nbdOverlayPath || !images.some((e) => e.nbdOverlay)) return;
    const path = join(c.stateDir, "nbd-overlay.cpio");
    await mkdir(c.stateDir, { recursive: true });
    try {
      await writeFile(path, await buildNbdOverlay());
      this.#nbdOverlayPath = path;
    } catch (err) {
      if (images.some((e) => e.nbdOverlay === true)) throw err;
      this.#log.warn(
        { err: (err as Error).message },
        "no NBD overlay for image initrds without nbd-client",
      );
    }
  }

  async #startNbd(): Promise<void> {
    const c = this.config;
    await this.#ensureNbdOverlay();
    // No default export: each export is one boot's disk, reachable only by its own name; the
    // token in that name stays out of the logs.
    const nbd = new NbdServer({
      ...{ exports: [], defaultExport: false, logger: this.#log },
      logName: redactedExport,
    });
    const bound = await nbd.listen({
      host: c.listen.interface ? "0.0.0.0" : this.#address,
      port: c.nbd.port,
    });
    this.#nbd = nbd;
    this.#nbdPort = "port" in bound ? bound.port : 0;
    this.#images = new ImageExports({
      ...{ nbd, stateDir: c.stateDir, cacheDir: c.cacheDir, allow: c.nbd.allow },
      cacheUnpacked: c.cacheUnpacked,
      entries: [...c.entries.values()].filter((e) => e.kind === "image"),
      ...imageMetrics(this.metrics),
      logger: this.#log,
    });
  }

  async stop(): Promise<void> {
    this.#loop.close();
    this.#firstStageWatch.close();
    await this.#dhcp?.stop();
    await this.#nbd?.close();
    await this.#images?.close();
    await this.#isos.close();
    await this.#tftp?.stop();
    const http = this.#http;
    this.#http = null;
    if (http) {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    }
  }
}
