// Image entries: the server opens each image's latest trusted release once (chunk store →
// mirror set → the server's shared chunk cache → chunked device) and exports it over NBD to
// each machine through a copy-on-write overlay of its own: fresh every boot (`ephemeral`) or
// kept per MAC across boots (`per-machine`).
import { existsSync, readFileSync, rmSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { BlockDevice } from "../block/block-device.ts";
import { CowDevice } from "../block/cow-device.ts";
import { LazyDevice } from "../block/lazy-device.ts";
import { openDeviceStack } from "../block/open-stack.ts";
import type { DeviceStack } from "../block/open-stack.ts";
import { PassThroughDevice } from "../block/pass-through.ts";
import { TraceDevice } from "../block/trace-device.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import type { NbdServer } from "../nbd/server.ts";
import { readLatest } from "../store/catalog.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { openStore } from "../store/open-store.ts";
import { loadTrustedKeys } from "../store/trust.ts";
import type { Entry } from "./config.ts";
import { ExportTickets } from "./export-tickets.ts";
import type { Ticket } from "./export-tickets.ts";

type ImageEntry = Extract<Entry, { kind: "image" }>;

/** How long a boot waits for a newer release to be found and opened before it goes on. */
const REFRESH_WAIT_MS = 2000;
/** Connections one boot's export takes (the kernel's client uses one; multi-conn a few). */
export const MAX_CONNECTIONS_PER_BOOT = 8;
/** How often tickets nobody connected to are looked for and dropped. */
const SWEEP_MS = 15_000;

/** An opened image and the tracer over it that sees every machine's reads of the base. */
interface Base {
  stack: DeviceStack;
  trace: TraceDevice;
}

/**
 * The release a per-machine disk was made on, kept beside its overlay: a newer release (or a
 * roll-back) cannot sit under blocks written over another one, so the machine keeps booting the
 * release its disk belongs to until the disk is reset.
 */
interface DiskOrigin {
  /** NAME@sha256:DIGEST of the release file (opens it again, allowed by anti-rollback). */
  source: string;
  /** NAME@REV, for people. */
  label: string;
  baseId: string;
}

function readOrigin(overlay: string): DiskOrigin | null {
  try {
    const o = JSON.parse(readFileSync(`${overlay}.release.json`, "utf8")) as DiskOrigin;
    return typeof o.source === "string" && typeof o.baseId === "string" ? o : null;
  } catch {
    return null;
  }
}

/** The shared base under many overlays: closing one machine's overlay must not close it. */
class SharedBase extends PassThroughDevice {
  override close(): Promise<void> {
    return Promise.resolve();
  }
}

export interface ImageExportsOptions {
  nbd: NbdServer;
  /** Each chunk fetch from a mirror, timed (metrics). */
  onFetch?: (seconds: number, mirror: string, ok: boolean) => void;
  /** An entry moved to a newer release while the server runs (metrics). */
  onNewRelease?: (entry: string) => void;
  stateDir: string;
  cacheDir: string;
  /** machine: each export opens only for the address that asked for its plan (default). */
  allow?: "machine" | "any";
  /** The image entries (their disk kinds). */
  entries?: ImageEntry[];
  /** How long an export waits for its machine (DEFAULT_TICKET_TTL_MS). */
  ticketTtlMs?: number;
  logger?: Logger;
}

/** "::ffff:10.0.0.5" and "10.0.0.5" are one client. */
function plainAddress(address: string | undefined): string | undefined {
  return address?.replace(/^::ffff:/, "");
}

export class ImageExports {
  readonly #o: ImageExportsOptions;
  readonly #log: Logger;
  readonly #bases = new Map<string, Promise<Base>>();
  /** Older releases kept open for per-machine disks made on them (by release source). */
  readonly #older = new Map<string, Promise<Base>>();
  /** Export name → the release its disk stays on, when that is not the entry's current one. */
  readonly #stays = new Map<string, string>();
  /** Entry → when a newer release was last looked for, and the last failure said. */
  readonly #checked = new Map<string, { at: number; error?: string }>();
  /** Entry → its look for a newer release under way. */
  readonly #refreshing = new Map<string, Promise<Base>>();
  /** Per-boot export names, their owners and expiry. */
  readonly #tickets: ExportTickets;
  /** Ticket name → its export's device (opened on first use). */
  readonly #exports = new Map<string, { device: LazyDevice; entry: string; mac: string }>();
  /** ENTRY-MAC → a per-machine disk, open while a ticket of the machine exists. */
  readonly #disks = new Map<string, { base: Base; device: Promise<CowDevice> }>();
  /** Entry → its disk kind. */
  readonly #kinds = new Map<string, "ephemeral" | "per-machine">();
  readonly #sweep: NodeJS.Timeout;
  /** Entry → release digest pinned from the dashboard (roll-back), kept in STATE/pins.json. */
  readonly #pins: Map<string, string>;

  constructor(options: ImageExportsOptions) {
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
    let pins: Record<string, string> = {};
    try {
      pins = JSON.parse(readFileSync(this.#pinsPath, "utf8")) as Record<string, string>;
    } catch {
      // none yet
    }
    this.#pins = new Map(Object.entries(pins).filter(([, d]) => /^[0-9a-f]{64}$/.test(d)));
    this.#tickets = new ExportTickets({
      clientsOf: (name) => options.nbd.clientsOf(name),
      ttlMs: options.ticketTtlMs,
    });
    for (const e of options.entries ?? []) this.#kinds.set(e.name, e.disk);
    // Fresh overlays of an earlier run belong to boots that are over.
    rmSync(join(options.stateDir, "ephemeral"), { recursive: true, force: true });
    this.#sweep = setInterval(() => {
      this.#drop(this.#tickets.expire()).catch((err: Error) =>
        this.#log.warn({ err: err.message }, "cannot drop expired boot exports"),
      );
    }, SWEEP_MS);
    this.#sweep.unref();
  }

  get #pinsPath(): string {
    return join(this.#o.stateDir, "pins.json");
  }

  /** The release digest an entry is pinned to from the dashboard, or null (the latest). */
  pin(entry: string): string | null {
    return this.#pins.get(entry) ?? null;
  }

  /**
   * Pins an entry to a release (a roll-back; null follows the latest again). The next boot
   * opens that release; machines already running keep the disk they have.
   */
  async setPin(entry: ImageEntry, digest: string | null): Promise<void> {
    if (digest === null) this.#pins.delete(entry.name);
    else this.#pins.set(entry.name, digest);
    await writeFileAtomic(this.#pinsPath, JSON.stringify(Object.fromEntries(this.#pins)) + "\n");
    this.#bases.delete(entry.name);
    this.#log.info({ entry: entry.name, release: digest ?? "latest" }, "image entry pinned");
  }

  /** What the entry opens: its source, or the pinned release by digest. */
  source(entry: ImageEntry): string {
    const digest = this.#pins.get(entry.name);
    return digest
      ? `${entry.image.source.replace(/@.*$/, "")}@sha256:${digest}`
      : entry.image.source;
  }

  /** The opened images. */
  async opened(): Promise<{ entry: string; stack: DeviceStack; trace: TraceDevice }[]> {
    const out = [];
    for (const [entry, p] of this.#bases) {
      const base = await p.catch(() => null);
      if (base) out.push({ entry, ...base });
    }
    return out;
  }

  /** The stack of `source` for `entry`: the store, mirrors, cache and trust of the entry. */
  #open(entry: ImageEntry, source: string): Promise<Base> {
    return openDeviceStack(source, {
      stores: entry.image.stores,
      onFetch: this.#o.onFetch,
      cache: this.#o.cacheDir,
      policy: {
        trusted: loadTrustedKeys(entry.image.trust),
        insecure: entry.image.insecure,
        statePath: join(this.#o.stateDir, "accepted-releases.json"),
      },
      logger: this.#log,
    }).then((stack) => ({ stack, trace: new TraceDevice(stack.device, null) }));
  }

  /**
   * The entry's stack for a boot starting now. For an entry following the latest release, a
   * newer revision published in its store (looked for at most every `recheck` seconds) is
   * opened and becomes the entry's; the one it replaces stays open for the disks on it. A boot
   * waits for that at most REFRESH_WAIT_MS (a slow or unreachable store must not hold machines
   * up): past it, this boot gets the current release and a later one the new.
   */
  async #current(entry: ImageEntry): Promise<Base> {
    const opening = this.base(entry);
    const base = await opening;
    const release = base.stack.image?.release?.release;
    const checked = this.#checked.get(entry.name);
    const now = Date.now();
    if (!checked) this.#checked.set(entry.name, { at: now }); // it was just opened
    if (
      !checked ||
      !release ||
      /@/.test(this.source(entry)) ||
      now - checked.at < entry.image.recheckSeconds * 1000 ||
      this.#refreshing.has(entry.name)
    ) {
      return base;
    }
    this.#checked.set(entry.name, { at: now, error: checked.error });
    const refresh = this.#refresh(entry, opening, base, release).finally(() =>
      this.#refreshing.delete(entry.name),
    );
    this.#refreshing.set(entry.name, refresh);
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<Base>((r) => (timer = setTimeout(() => r(base), REFRESH_WAIT_MS)));
    return Promise.race([refresh, waited]).finally(() => clearTimeout(timer));
  }

  /** Looks for a revision newer than `release`; opens it and makes it the entry's if there is. */
  async #refresh(
    entry: ImageEntry,
    opening: Promise<Base>,
    base: Base,
    release: { name: string; revision: number },
  ): Promise<Base> {
    let latest: number | null = null;
    for (const store of entry.image.stores) {
      const reader = openStore(store);
      try {
        latest = await readLatest(reader, release.name);
        break;
      } catch (err) {
        const error = (err as Error).message;
        const seen = this.#checked.get(entry.name);
        if (error !== seen?.error) {
          this.#log.warn(
            { entry: entry.name, store, err: error },
            "cannot look for a newer release",
          );
        }
        this.#checked.set(entry.name, { at: seen?.at ?? Date.now(), error });
      } finally {
        await reader.close();
      }
    }
    if (latest === null || latest <= release.revision) return base;
    try {
      const next = this.#open(entry, this.source(entry));
      const opened = await next;
      if (this.#bases.get(entry.name) !== opening) {
        // Pinned or replaced meanwhile: that choice stands.
        await opened.stack.close();
        return this.base(entry);
      }
      // Disks made on the old release find it here (their record names it by digest).
      this.#older.set(`${release.name}@sha256:${base.stack.image?.release?.digest}`, opening);
      this.#bases.set(entry.name, next);
      this.#o.onNewRelease?.(entry.name);
      this.#log.info(
        { entry: entry.name, image: opened.stack.label, was: base.stack.label },
        "newer release opened; the next boots use it",
      );
      return opened;
    } catch (err) {
      this.#log.warn(
        { entry: entry.name, latest, err: (err as Error).message },
        "a newer release is published but cannot be opened; still booting the current one",
      );
      return base;
    }
  }

  /** The image's block stack, opened on first use (the release is resolved and verified then). */
  base(entry: ImageEntry): Promise<Base> {
    let p = this.#bases.get(entry.name);
    if (!p) {
      p = this.#open(entry, this.source(entry));
      this.#bases.set(entry.name, p);
      p.then(
        ({ stack }) =>
          this.#log.info(
            {
              entry: entry.name,
              image: stack.label,
              profile: stack.profileSource,
              pack: stack.pack !== null,
            },
            "image opened",
          ),
        () => this.#bases.delete(entry.name), // the next boot tries again
      );
    }
    return p;
  }

  static exportName(entry: string, mac: string): string {
    return ExportTickets.prefix(entry, mac);
  }

  /**
   * Makes an export for this boot of the machine at `address` and returns its name: a per-boot
   * ticket (`ENTRY-MAC-TOKEN`) that only `address` may open (unless nbd.allow is `any`). Its
   * disk — a fresh overlay (`ephemeral`) or the machine's own (`per-machine`, shared by its
   * tickets) — is opened when a client first uses it. Older tickets stay until they expire, so
   * a machine connected on one is never cut off by a new plan.
   */
  async prepare(entry: ImageEntry, mac: string, address: string): Promise<string> {
    const current = await this.#current(entry);
    const path = this.#overlayPath(entry, mac);
    const key = ImageExports.exportName(entry.name, mac);
    // A kept disk already open stays on the release it was opened over (size included).
    const shared = entry.disk === "per-machine" ? this.#disks.get(key) : undefined;
    const base = shared?.base ?? (await this.#diskBase(entry, mac, path, current));
    const { ticket, dropped } = this.#tickets.issue(entry.name, mac, plainAddress(address) ?? "");
    await this.#drop(dropped);
    const device = new LazyDevice(base.trace.size, () =>
      entry.disk === "per-machine"
        ? this.#machineDisk(entry, mac, path, base)
        : this.#ephemeralDisk(entry, ticket.name, base),
    );
    this.#exports.set(ticket.name, { device, entry: entry.name, mac });
    const label = base.stack.label;
    this.#o.nbd.setExport({
      name: ticket.name,
      description: `${label} for ${mac}`,
      device,
      allow: (remote) => this.#allows(ticket, remote),
      // With allow: any the token is all that guards the disk: never listed to anyone.
      listed: this.#o.allow !== "any",
    });
    return ticket.name;
  }

  /** Whether `remote` may open `ticket`'s export now. */
  #allows(ticket: Ticket, remote: string | undefined): boolean {
    if (this.#tickets.get(ticket.name) !== ticket) return false;
    if (this.#o.allow !== "any" && plainAddress(remote) !== ticket.address) return false;
    // A boot's disk needs a connection or a few (multi-conn), never the server's whole budget.
    if (this.#o.nbd.clientsOf(ticket.name) >= MAX_CONNECTIONS_PER_BOOT) return false;
    const entry = this.#exports.get(ticket.name);
    if (!entry || !this.#perMachine(entry.entry)) return true;
    // A machine's kept disk opens only on its newest ticket (an older one's connection stays),
    // and never while a connection from another address uses it: claiming the MAC of a running
    // machine does not open its disk.
    if (!this.#tickets.isCurrent(ticket)) return false;
    return !this.#tickets
      .of(ticket.entry, ticket.mac)
      .some((t) => t.address !== ticket.address && this.#o.nbd.clientsOf(t.name) > 0);
  }

  #perMachine(entry: string): boolean {
    return this.#kinds.get(entry) === "per-machine";
  }

  /** The machine's kept disk, opened once and shared by its tickets. */
  async #machineDisk(
    entry: ImageEntry,
    mac: string,
    path: string,
    base: Base,
  ): Promise<BlockDevice> {
    const key = ImageExports.exportName(entry.name, mac);
    let p = this.#disks.get(key)?.device;
    if (!p) {
      p = (async () => {
        await mkdir(dirname(path), { recursive: true });
        const fresh = !existsSync(path);
        const device = await CowDevice.open(new SharedBase(base.trace), path, {
          baseId: base.stack.baseId,
        });
        const release = base.stack.image?.release;
        if (fresh && release) {
          const origin: DiskOrigin = {
            source: `${entry.image.source.replace(/@.*$/, "")}@sha256:${release.digest}`,
            label: base.stack.label,
            baseId: base.stack.baseId,
          };
          await writeFileAtomic(`${path}.release.json`, JSON.stringify(origin) + "\n");
        }
        return device;
      })();
      const opening = p;
      this.#disks.set(key, { base, device: opening });
      opening.catch(() => {
        if (this.#disks.get(key)?.device === opening) this.#disks.delete(key);
      });
    }
    return new SharedBase(await p);
  }

  /** A fresh overlay for one boot, deleted when its ticket goes. */
  async #ephemeralDisk(entry: ImageEntry, name: string, base: Base): Promise<BlockDevice> {
    const path = this.#ephemeralPath(entry.name, name);
    await mkdir(dirname(path), { recursive: true });
    await rm(path, { force: true });
    return CowDevice.open(new SharedBase(base.trace), path, { baseId: base.stack.baseId });
  }

  #ephemeralPath(entry: string, name: string): string {
    return join(this.#o.stateDir, "ephemeral", entry, `${name}.cow`);
  }

  /** Removes the exports of tickets that went; closes disks no ticket uses any more. */
  async #drop(tickets: Ticket[]): Promise<void> {
    for (const t of tickets) {
      this.#o.nbd.removeExport(t.name);
      const e = this.#exports.get(t.name);
      this.#exports.delete(t.name);
      if (!e) continue;
      try {
        await e.device.close();
        if (this.#perMachine(e.entry)) {
          if (this.#tickets.of(e.entry, e.mac).length === 0) await this.#closeDisk(e.entry, e.mac);
        } else {
          await rm(this.#ephemeralPath(e.entry, t.name), { force: true });
        }
      } catch (err) {
        this.#log.warn(
          { entry: e.entry, mac: e.mac, err: (err as Error).message },
          "cannot close a boot's disk",
        );
      }
    }
  }

  async #closeDisk(entry: string, mac: string): Promise<void> {
    const key = ImageExports.exportName(entry, mac);
    const disk = this.#disks.get(key);
    this.#disks.delete(key);
    await (await disk?.device.catch(() => null))?.close();
  }

  /** The machine's current export name for the entry (DHCP root path), if it has one. */
  currentExport(entry: string, mac: string): string | undefined {
    return this.#tickets.current(entry, mac)?.name;
  }

  /** Exports (tickets) and opened disks, for bounds checks and the API. */
  get counts(): { tickets: number; disks: number; opened: number } {
    let opened = 0;
    for (const e of this.#exports.values()) if (e.device.opened) opened++;
    return { tickets: this.#tickets.size, disks: this.#disks.size, opened };
  }

  /**
   * The base a machine's disk goes over: the entry's current release, or — for a per-machine
   * disk made on another release — that release, opened again by digest (the machine stays
   * there until its disk is reset).
   */
  async #diskBase(entry: ImageEntry, mac: string, path: string, current: Base): Promise<Base> {
    const name = ImageExports.exportName(entry.name, mac);
    this.#stays.delete(name);
    if (entry.disk !== "per-machine") return current;
    const origin = existsSync(path) ? readOrigin(path) : null;
    if (!origin || origin.baseId === current.stack.baseId) return current;
    let p = this.#older.get(origin.source);
    if (!p) {
      p = this.#open(entry, origin.source);
      this.#older.set(origin.source, p);
      p.catch(() => this.#older.delete(origin.source));
    }
    const base = await p.catch((err: Error) => {
      throw new Error(
        `the disk of ${mac} was made on ${origin.label}, which cannot be opened (${err.message}); reset the machine's disk (dashboard, or delete ${path}) to start it on ${current.stack.label}`,
        { cause: err },
      );
    });
    this.#stays.set(name, origin.label);
    this.#log.info(
      { entry: entry.name, mac, release: origin.label, current: current.stack.label },
      "machine disk stays on the release it was made on (reset the disk to move it)",
    );
    return base;
  }

  /** The release a machine's disk keeps it on when that is not the entry's current one. */
  staysOn(entry: string, mac: string): string | null {
    return this.#stays.get(ImageExports.exportName(entry, mac)) ?? null;
  }

  #overlayPath(entry: ImageEntry, mac: string): string {
    return join(this.#o.stateDir, "overlays", entry.name, `${mac.replace(/:/g, "-")}.cow`);
  }

  /**
   * Discards a machine's disk (its copy-on-write overlay): its next boot starts from the image
   * as published. A machine still running on it loses its disk. Resolves with whether it had one.
   */
  async resetDisk(entry: ImageEntry, mac: string): Promise<boolean> {
    const key = ImageExports.exportName(entry.name, mac);
    const path = this.#overlayPath(entry, mac);
    const had = this.#disks.has(key) || existsSync(path);
    const tickets = this.#tickets.of(entry.name, mac);
    for (const t of tickets) this.#tickets.remove(t.name);
    await this.#drop(tickets);
    await this.#closeDisk(entry.name, mac);
    await rm(path, { force: true });
    await rm(`${path}.release.json`, { force: true });
    this.#stays.delete(key);
    this.#log.info({ entry: entry.name, mac, overlay: path, had }, "machine disk reset");
    return had;
  }

  /**
   * Statistics of the opened images (for the API). Occupancy = distinct bytes machines read /
   * bytes of the chunks fetched for them (HTTP-FUSE CLOOP measured 30%).
   */
  async stats(): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for (const [entry, p] of this.#bases) {
      const base = await p.catch(() => null);
      if (!base) continue;
      const { stack, trace } = base;
      const fetchedBytes = (stack.mirrors?.fetchedBytes ?? 0) + (stack.pack?.deliveredBytes ?? 0);
      out.push({
        entry,
        image: stack.label,
        profile: stack.profileSource,
        readBytes: trace.coveredBytes,
        fetchedBytes,
        occupancy: fetchedBytes > 0 ? trace.coveredBytes / fetchedBytes : null,
        cache: stack.cache?.stats ?? null,
        pack: stack.pack,
        prefetch: stack.prefetch,
        mirrors: stack.mirrorStats(),
      });
    }
    return out;
  }

  /** The first accesses of every machine to the entry's image since it was opened. */
  async profile(entry: string): Promise<string | null> {
    const base = await this.#bases.get(entry)?.catch(() => null);
    return base ? base.trace.text() : null;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#refreshing.values()); // a stack it opens is closed below
    clearInterval(this.#sweep);
    for (const e of this.#exports.values()) await e.device.close();
    for (const d of this.#disks.values()) await (await d.device.catch(() => null))?.close();
    for (const p of [...this.#bases.values(), ...this.#older.values()]) {
      await (await p.catch(() => null))?.stack.close();
    }
    this.#exports.clear();
    this.#disks.clear();
    this.#bases.clear();
    this.#older.clear();
  }
}
