// The ISO entries' open ISOs, as ImageExports holds the images: each opened once on first use
// (read by Range into the block cache, checked against its sha256, signed list or signature,
// recipe found), shared by every machine, reopened after a failure; with how far a whole-ISO
// check is and why the last opening failed, for the dashboard. An ISO whose family boots lazily
// is also a read-only NBD export, `iso/ENTRY`, shared by every machine that boots it; the
// initrd overlays the lazy recipes need are built here once, from the server's nbd-client.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { openChunkCache } from "../block/chunk-cache.ts";
import { BorrowedDevice } from "../block/borrowed-device.ts";
import { buildLiveOverlay } from "../boot/live-overlay.ts";
import type { LiveHook } from "../boot/live-overlay.ts";
import { LiveIso } from "../iso/live-iso.ts";
import { lazyMiss, lazyOf } from "../iso/recipes.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import type { IsoEntry } from "./entries/iso.ts";
import type { ExportTarget } from "./image-exports.ts";

/** How a machine boots an ISO lazily: the export to attach and the overlay its initrd needs. */
export interface LazyBoot {
  exportName: string;
  hook: LiveHook | null;
  /** The overlay's file on the server (null when the family needs none). */
  overlay: string | null;
}

/** The NBD export name of an ISO entry ("/" is in no entry name nor in a per-boot ticket). */
export function isoExportName(entry: string): string {
  return `iso/${entry}`;
}

export interface IsoEntriesOptions {
  cacheDir: string;
  /** Where the lazy recipes' initrd overlays are written. */
  stateDir?: string;
  /** The NBD server the lazy ISOs are exported on (null: not running, no lazy boots). */
  nbd?: () => ExportTarget | null;
  /** An ISO opened (layout read, checks passed) or refused (metrics). */
  onOpen?: (entry: string, result: "opened" | "refused") => void;
  logger?: Logger;
}

export class IsoEntries {
  readonly #o: IsoEntriesOptions;
  readonly #log: Logger;
  readonly #isos = new Map<string, Promise<LiveIso>>();
  /** How far the check of an ISO against its sha256 is, while it runs. */
  readonly #progress = new Map<string, { done: number; total: number }>();
  /** Why an ISO entry's last opening failed (until it opens). */
  readonly #errors = new Map<string, string>();
  /** Entry → its NBD export's device, for those a machine booted lazily. */
  readonly #exported = new Map<string, { live: LiveIso; device: BorrowedDevice }>();
  /** Hook → its overlay file (null: it cannot be built here, with the warning logged once). */
  readonly #overlays = new Map<LiveHook, Promise<string | null>>();

  constructor(options: IsoEntriesOptions) {
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
  }

  /**
   * Forgets an entry's ISO after a reload changed or removed the entry: its next boot opens the
   * new one. Machines attached to the old ISO's export keep it.
   */
  forget(name: string): void {
    this.#isos.delete(name);
    this.#progress.delete(name);
    this.#errors.delete(name);
  }

  /** The entry's ISO, opened on first use (a failure is not kept: the next boot tries again). */
  open(entry: IsoEntry): Promise<LiveIso> {
    let p = this.#isos.get(entry.name);
    if (p) return p;
    p = LiveIso.open(entry.iso, {
      sha256: entry.sha256,
      checksums: entry.checksums,
      signature: entry.signature,
      onVerifyProgress: (done, total) => this.#progress.set(entry.name, { done, total }),
      cacheDir: join(this.#o.cacheDir, "iso"),
      space: openChunkCache(this.#o.cacheDir, { logger: this.#log }),
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
        this.#unexport(entry.name);
        this.#o.onOpen?.(entry.name, "opened");
        this.#errors.delete(entry.name);
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
        this.#o.onOpen?.(entry.name, "refused");
        this.#errors.set(entry.name, err.message);
        this.#isos.delete(entry.name);
      },
    );
    void p.finally(() => this.#progress.delete(entry.name)).catch(() => undefined);
    return p;
  }

  /**
   * How a machine boots `live` lazily, or null when it takes the download recipe: the entry
   * says lazy: false, the family has no lazy way, no NBD server runs, or the overlay its initrd
   * needs cannot be built here (no nbd-client: said once in the log).
   */
  async lazy(entry: IsoEntry, live: LiveIso): Promise<LazyBoot | null> {
    const recipe = lazyOf(live.recipe);
    const nbd = this.#o.nbd?.();
    if (entry.lazy === false || !recipe || !nbd) return null;
    const overlay = recipe.hook ? await this.#overlay(recipe.hook) : null;
    if (recipe.hook && !overlay) return null;
    const exportName = isoExportName(entry.name);
    if (this.#exported.get(entry.name)?.live !== live) {
      // Shared with HTTP: never closed by NBD; its reads counted.
      const device = new BorrowedDevice(live.device);
      this.#exported.set(entry.name, { live, device });
      // Public data, read-only: any machine may attach it; the name opens nothing else.
      nbd.setExport({ name: exportName, description: `ISO of ${entry.name}`, device });
    }
    return { exportName, hook: recipe.hook, overlay };
  }

  /** How machines boot it, in words (the dashboard): lazily, or downloaded and why. */
  async bootWay(
    entry: IsoEntry,
    live: LiveIso,
  ): Promise<{ lazy: true; hook: LiveHook | null } | { lazy: false; why: string }> {
    const recipe = lazyOf(live.recipe);
    if (!recipe) return { lazy: false, why: lazyMiss(live.recipe) };
    if (!entry.lazy) return { lazy: false, why: "the entry says lazy: false" };
    if (!this.#o.nbd?.()) return { lazy: false, why: "no NBD server runs" };
    if (recipe.hook && !(await this.#overlays.get(recipe.hook))) {
      if (this.#overlays.has(recipe.hook)) {
        return {
          lazy: false,
          why: "the initrd overlay cannot be built (see the log: nbd-client?)",
        };
      }
    }
    return { lazy: true, hook: recipe.hook };
  }

  /** Bytes machines read from the ISO over NBD since it was exported. */
  nbdBytes(entry: string): number {
    return this.#exported.get(entry)?.device.bytesRead ?? 0;
  }

  #overlay(hook: LiveHook): Promise<string | null> {
    let p = this.#overlays.get(hook);
    if (!p) {
      const dir = this.#o.stateDir ?? this.#o.cacheDir;
      const path = join(dir, `live-overlay-${hook}.cpio`);
      p = (async () => {
        const data = await buildLiveOverlay(hook);
        await mkdir(dir, { recursive: true });
        await writeFile(path, data);
        return path;
      })().catch((err: Error) => {
        this.#log.warn(
          { hook, err: err.message },
          "live ISOs of this initrd framework boot with their download recipe",
        );
        return null;
      });
      this.#overlays.set(hook, p);
    }
    return p;
  }

  #unexport(entry: string): void {
    if (!this.#exported.has(entry)) return;
    this.#exported.delete(entry);
    this.#o.nbd?.()?.removeExport(isoExportName(entry));
  }

  /** The ISO if it opens within `ms`; null while it is still opening (checking, slow origin). */
  async within(entry: IsoEntry, ms: number): Promise<LiveIso | null> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.open(entry),
      new Promise<null>((r) => (timer = setTimeout(() => r(null), ms))),
    ]).finally(() => clearTimeout(timer));
  }

  /** What a machine waiting for the ISO is told. */
  waitMessage(entry: IsoEntry): string {
    const p = this.#progress.get(entry.name);
    return p
      ? `checking ${entry.name}'s ISO against its ${entry.signature ? "signature" : "sha256"}: ${Math.floor((100 * p.done) / Math.max(1, p.total))}% of ${Math.round(p.total / 1e6)} MB`
      : `opening ${entry.name}'s ISO`;
  }

  /** Opened ISOs, by entry (without waiting for those still opening). */
  get opening(): ReadonlyMap<string, Promise<LiveIso>> {
    return this.#isos;
  }

  get progress(): ReadonlyMap<string, { done: number; total: number }> {
    return this.#progress;
  }

  get errors(): ReadonlyMap<string, string> {
    return this.#errors;
  }

  /** For /api/images. */
  async stats(): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for (const [entry, p] of this.#isos) {
      const iso = await p.catch(() => null);
      if (!iso) continue;
      const lazy = lazyOf(iso.recipe);
      const cache = iso.cacheStats;
      out.push({
        entry,
        iso: iso.source,
        size: iso.device.size,
        family: iso.recipe.family,
        kernel: iso.recipe.kernel,
        initrd: iso.recipe.initrd,
        lazy: lazy ? { hook: lazy.hook } : { none: lazyMiss(iso.recipe) },
        // What machines read (over NBD and HTTP), what came from the origin, and the RAM each
        // machine would fill with the download recipe's copy.
        readBytes: { nbd: this.nbdBytes(entry), http: iso.httpBytes },
        originBytes: cache ? cache.fetchedBytes : null,
        downloadBytes: await iso.downloadBytes(),
        cache,
      });
    }
    return out;
  }

  async close(): Promise<void> {
    for (const p of this.#isos.values()) await (await p.catch(() => null))?.close();
    this.#isos.clear();
  }
}
