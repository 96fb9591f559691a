// The ISO entries' open ISOs, as ImageExports holds the images: each opened once on first use
// (read by Range into the block cache, checked against its sha256, signed list or signature,
// recipe found), shared by every machine, reopened after a failure; with how far a whole-ISO
// check is and why the last opening failed, for the dashboard.
import { join } from "node:path";
import { openChunkCache } from "../block/chunk-cache.ts";
import { LiveIso } from "../iso/live-iso.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import type { IsoEntry } from "./entries/iso.ts";

export interface IsoEntriesOptions {
  cacheDir: string;
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

  constructor(options: IsoEntriesOptions) {
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
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

  async close(): Promise<void> {
    for (const p of this.#isos.values()) await (await p.catch(() => null))?.close();
    this.#isos.clear();
  }
}
