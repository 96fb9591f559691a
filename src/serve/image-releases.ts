// The releases image entries boot: each entry's latest trusted release (or the one pinned from
// the dashboard) opened once — chunk store → mirror set → the shared chunk cache → chunked
// device, traced — followed to a newer one without a restart, and the older ones kept open for
// the per-machine disks made on them.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { openDeviceStack } from "../block/open-stack.ts";
import type { DeviceStack } from "../block/open-stack.ts";
import { TraceDevice } from "../block/trace-device.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { isErrno } from "../lib/atomic-file.ts";
import type { Logger } from "../lib/log.ts";
import { readLatest } from "../store/catalog.ts";
import { openStore } from "../store/open-store.ts";
import { regionDataBytes } from "../store/profile.ts";
import { loadTrustedKeys } from "../store/trust.ts";
import type { Entry } from "./config.ts";
import { ExportTickets } from "./export-tickets.ts";

type ImageEntry = Extract<Entry, { kind: "image" }>;

/** How long a boot waits for a newer release to be found and opened before it goes on. */
const REFRESH_WAIT_MS = 2000;

/** An opened image and the tracer over it that sees every machine's reads of the base. */
export interface Base {
  stack: DeviceStack;
  trace: TraceDevice;
}

/**
 * The release a per-machine disk was made on, kept beside its overlay: a newer release (or a
 * roll-back) cannot sit under blocks written over another one, so the machine keeps booting the
 * release its disk belongs to until the disk is reset.
 */
export interface DiskOrigin {
  /** NAME@sha256:DIGEST of the release file (opens it again, allowed by anti-rollback). */
  source: string;
  /** NAME@REV, for people. */
  label: string;
  baseId: string;
}

export function readOrigin(overlay: string): DiskOrigin | null {
  try {
    const o = JSON.parse(readFileSync(`${overlay}.release.json`, "utf8")) as DiskOrigin;
    return typeof o.source === "string" && typeof o.baseId === "string" ? o : null;
  } catch {
    return null;
  }
}

export interface ImageReleasesOptions {
  stateDir: string;
  cacheDir: string;
  /** Keep images' chunks uncompressed in the cache too (default: yes). */
  cacheUnpacked?: boolean;
  /** Each chunk fetch from a mirror, timed (metrics). */
  onFetch?: (seconds: number, mirror: string, ok: boolean) => void;
  /** An entry moved to a newer release while the server runs (metrics). */
  onNewRelease?: (entry: string) => void;
  logger: Logger;
}

/** A machine's disk of an entry (ENTRY-MAC): the prefix of its per-boot export names. */
const diskKey = (entry: string, mac: string): string => ExportTickets.prefix(entry, mac);

export class ImageReleases {
  readonly #o: ImageReleasesOptions;
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
  /** Entry → release digest pinned from the dashboard (roll-back), kept in STATE/pins.json. */
  readonly #pins: Map<string, string>;

  constructor(options: ImageReleasesOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.#pins = readPins(this.#pinsPath);
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

  /**
   * Drops an entry's current release after a reload changed the entry: the next boot opens the
   * image the entry names now. The old one stays open (closed with the others) for the boots
   * running on it.
   */
  forgetEntry(name: string): void {
    const base = this.#bases.get(name);
    if (!base) return;
    this.#bases.delete(name);
    this.#older.set(`${name} (before a reload, ${Date.now()})`, base);
    this.#checked.delete(name);
  }

  /** The stack of `source` for `entry`: the store, mirrors, cache and trust of the entry. */
  open(entry: ImageEntry, source: string): Promise<Base> {
    return openDeviceStack(source, {
      stores: entry.image.stores,
      onFetch: this.#o.onFetch,
      cache: this.#o.cacheDir,
      unpacked: this.#o.cacheUnpacked,
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
  async current(entry: ImageEntry): Promise<Base> {
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
      const next = this.open(entry, this.source(entry));
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
      p = this.open(entry, this.source(entry));
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

  /**
   * The base a machine's disk goes over: the entry's current release, or — for a per-machine
   * disk made on another release — that release, opened again by digest (the machine stays
   * there until its disk is reset).
   */
  async diskBase(entry: ImageEntry, mac: string, path: string, current: Base): Promise<Base> {
    const name = diskKey(entry.name, mac);
    this.#stays.delete(name);
    if (entry.disk !== "per-machine") return current;
    const origin = existsSync(path) ? readOrigin(path) : null;
    if (!origin || origin.baseId === current.stack.baseId) return current;
    let p = this.#older.get(origin.source);
    if (!p) {
      p = this.open(entry, origin.source);
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
    return this.#stays.get(diskKey(entry, mac)) ?? null;
  }

  /** Forgets where a machine's disk stayed (its disk was reset). */
  forget(entry: string, mac: string): void {
    this.#stays.delete(diskKey(entry, mac));
  }

  /**
   * Statistics of the opened images (for the API). Occupancy = distinct bytes machines read
   * that had to be fetched (all-zero chunks never are) / bytes fetched for them, chunks and
   * boot-pack pieces (HTTP-FUSE CLOOP measured 30%).
   */
  async stats(): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for (const [entry, p] of this.#bases) {
      const base = await p.catch(() => null);
      if (!base) continue;
      const { stack, trace } = base;
      const fetchedBytes = (stack.mirrors?.fetchedBytes ?? 0) + (stack.pack?.deliveredBytes ?? 0);
      const index = stack.image?.index;
      const readDataBytes = index ? regionDataBytes(index, trace.profile) : trace.coveredBytes;
      out.push({
        entry,
        image: stack.label,
        profile: stack.profileSource,
        readBytes: trace.coveredBytes,
        readDataBytes,
        fetchedBytes,
        occupancy: fetchedBytes > 0 ? readDataBytes / fetchedBytes : null,
        cache: stack.cache?.stats ?? null,
        pack: stack.pack,
        pieces: stack.pieces,
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
    for (const p of [...this.#bases.values(), ...this.#older.values()]) {
      await (await p.catch(() => null))?.stack.close();
    }
    this.#bases.clear();
    this.#older.clear();
  }
}

/**
 * The pins kept in STATE/pins.json: none when there is no file; an unreadable or malformed one
 * stops the server with what to do (a silent "no pins" would boot machines on a release the
 * operator rolled away from).
 */
function readPins(path: string): Map<string, string> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT")) return new Map();
    throw new Error(`Cannot read the roll-back pins ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  let pins: unknown;
  try {
    pins = JSON.parse(text);
  } catch (err) {
    throw new Error(
      `The roll-back pins ${path} are damaged (${(err as Error).message}); fix or delete the file (entries then follow their latest release)`,
      { cause: err },
    );
  }
  if (typeof pins !== "object" || pins === null || Array.isArray(pins)) {
    throw new Error(
      `The roll-back pins ${path} are not an object of ENTRY: DIGEST; fix or delete the file`,
    );
  }
  return new Map(
    Object.entries(pins as Record<string, unknown>).filter(
      (e): e is [string, string] => typeof e[1] === "string" && /^[0-9a-f]{64}$/.test(e[1]),
    ),
  );
}
