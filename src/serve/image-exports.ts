// Image entries: the server opens each image's latest trusted release once (chunk store →
// mirror set → the server's shared chunk cache → chunked device) and exports it over NBD to
// each machine through a copy-on-write overlay of its own: fresh every boot (`ephemeral`) or
// kept per MAC across boots (`per-machine`).
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { CowDevice } from "../block/cow-device.ts";
import { openDeviceStack } from "../block/open-stack.ts";
import type { DeviceStack } from "../block/open-stack.ts";
import { PassThroughDevice } from "../block/pass-through.ts";
import { TraceDevice } from "../block/trace-device.ts";
import { silentLogger } from "../log.ts";
import type { Logger } from "../log.ts";
import type { NbdServer } from "../nbd/server.ts";
import { readLatest } from "../store/catalog.ts";
import { writeFileAtomic } from "../store/local-store.ts";
import { openStoreReader } from "../store/store-reader.ts";
import { loadTrustedKeys } from "../store/trust.ts";
import type { Entry } from "./config.ts";

type ImageEntry = Extract<Entry, { kind: "image" }>;

/** How long a boot waits for a newer release to be found and opened before it goes on. */
const REFRESH_WAIT_MS = 2000;

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
  readonly #overlays = new Map<string, Promise<CowDevice>>();
  /** Export name → the address of the machine it belongs to (its latest plan request). */
  readonly #owners = new Map<string, string>();
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
      const reader = openStoreReader(store);
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
    return `${entry}-${mac.replace(/:/g, "-")}`;
  }

  /**
   * Makes the machine's export ready (a fresh overlay for ephemeral disks) for the machine at
   * `address`; returns its name.
   */
  async prepare(entry: ImageEntry, mac: string, address: string): Promise<string> {
    const name = ImageExports.exportName(entry.name, mac);
    this.#owners.set(name, plainAddress(address) ?? address);
    const current = await this.#current(entry);
    const path = this.#overlayPath(entry, mac);
    const dir = dirname(path);
    const existing = this.#overlays.get(name);
    if (existing && entry.disk === "per-machine") return existing.then(() => name);
    if (existing) {
      this.#overlays.delete(name);
      this.#o.nbd.removeExport(name);
      await (await existing.catch(() => null))?.close();
    }
    const { stack, trace } = await this.#diskBase(entry, mac, path, current);
    const opened = (async () => {
      await mkdir(dir, { recursive: true });
      if (entry.disk === "ephemeral") await rm(path, { force: true });
      const fresh = !existsSync(path);
      const device = await CowDevice.open(new SharedBase(trace), path, { baseId: stack.baseId });
      const release = stack.image?.release;
      if (fresh && entry.disk === "per-machine" && release) {
        const origin: DiskOrigin = {
          source: `${entry.image.source.replace(/@.*$/, "")}@sha256:${release.digest}`,
          label: stack.label,
          baseId: stack.baseId,
        };
        await writeFileAtomic(`${path}.release.json`, JSON.stringify(origin) + "\n");
      }
      return device;
    })();
    this.#overlays.set(name, opened);
    let device: CowDevice;
    try {
      device = await opened;
    } catch (err) {
      this.#overlays.delete(name);
      throw err;
    }
    this.#o.nbd.setExport({
      name,
      description: `${stack.label} for ${mac}`,
      device,
      allow:
        this.#o.allow === "any"
          ? undefined
          : (remote) => plainAddress(remote) === this.#owners.get(name),
    });
    return name;
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
    const name = ImageExports.exportName(entry.name, mac);
    const path = this.#overlayPath(entry, mac);
    const existing = this.#overlays.get(name);
    this.#overlays.delete(name);
    this.#o.nbd.removeExport(name);
    await (await existing?.catch(() => null))?.close();
    const had = existing !== undefined || existsSync(path);
    await rm(path, { force: true });
    await rm(`${path}.release.json`, { force: true });
    this.#stays.delete(name);
    this.#log.info({ entry: entry.name, mac, overlay: path, had }, "machine disk reset");
    return had;
  }

  has(name: string): boolean {
    return this.#overlays.has(name);
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
    for (const p of this.#overlays.values()) await (await p.catch(() => null))?.close();
    for (const p of [...this.#bases.values(), ...this.#older.values()]) {
      await (await p.catch(() => null))?.stack.close();
    }
    this.#overlays.clear();
    this.#bases.clear();
    this.#older.clear();
  }
}
