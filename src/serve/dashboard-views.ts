// What the dashboard's images and cache pages show, gathered from the image exports, the ISO
// entries, the stores (listed at most every 30 s) and the cache folder.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { cacheCoverage, openChunkCache } from "../block/chunk-cache.ts";
import type { ChunkCache } from "../block/chunk-cache.ts";
import { decodeProfile, profileChunks } from "../store/profile.ts";
import type { ProfileEntry } from "../store/profile.ts";
import { profilePath } from "../store/boot-pack.ts";
import { listStore } from "../store/list.ts";
import type { ListedRelease } from "../store/list.ts";
import { openImage } from "../store/source.ts";
import { isUrl, openStore } from "../store/open-store.ts";
import { loadTrustedKeys } from "../store/trust.ts";
import type { Entry, ServeConfig } from "./config.ts";
import type { ImageExports } from "./image-exports.ts";
import type { IsoEntries } from "./iso-entries.ts";
import type { CacheView, ImageView, IsoView } from "./ui/store-pages.ts";
import type { ExtractedBoot } from "./image-boot-files.ts";

type ImageEntry = Extract<Entry, { kind: "image" }>;

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
  entry: ImageEntry,
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

export class DashboardViews {
  readonly #live: () => ServeConfig;
  readonly #images: () => ImageExports | null;
  readonly #isos: IsoEntries;
  /** Store listings for the images page, kept for 30 s. */
  readonly #listings = new Map<string, { at: number; p: Promise<ListedRelease[]> }>();

  constructor(config: () => ServeConfig, images: () => ImageExports | null, isos: IsoEntries) {
    this.#live = config;
    this.#images = images;
    this.#isos = isos;
  }

  /** The releases in an image entry's first store (listed at most every 30 s). */
  listing(entry: ImageEntry): Promise<ListedRelease[]> {
    const store = entry.image.stores[0];
    const cached = this.#listings.get(store);
    if (cached && Date.now() - cached.at < 30_000) return cached.p;
    const reader = openStore(store);
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

  #imageEntries(): ImageEntry[] {
    return [...this.#live().entries.values()].filter((e) => e.kind === "image");
  }

  async imageViews(): Promise<ImageView[]> {
    const opened = new Map(
      ((await this.#images()?.opened()) ?? []).map((o) => [o.entry, o.stack.label]),
    );
    const boots = (await this.#images()?.bootsKnown()) ?? new Map<string, ExtractedBoot>();
    return Promise.all(
      this.#imageEntries().map(async (e) => {
        let releases: ListedRelease[] | null = null;
        let error: string | null = null;
        try {
          releases = await this.listing(e);
        } catch (err) {
          error = (err as Error).message;
        }
        return {
          entry: e.name,
          source: e.image.source,
          stores: e.image.stores,
          pinned: this.#images()?.pin(e.name) ?? null,
          open: opened.get(e.name) ?? null,
          boot: e.kernel ? null : (boots.get(e.name) ?? null),
          releases,
          error,
        };
      }),
    );
  }

  async isoViews(): Promise<IsoView[]> {
    const out: IsoView[] = [];
    for (const e of this.#live().entries.values()) {
      if (e.kind !== "iso") continue;
      // Never waits for an ISO still opening (a whole-ISO check can take minutes).
      const pending = this.#isos.opening.get(e.name);
      const iso = pending
        ? await Promise.race([pending, Promise.resolve("opening" as const)]).catch(() => null)
        : null;
      const progress = this.#isos.progress.get(e.name);
      const error = this.#isos.errors.get(e.name);
      const opened = iso !== "opening" ? iso : null;
      const way = opened ? await this.#isos.bootWay(e, opened) : null;
      out.push({
        entry: e.name,
        iso: e.iso,
        family: opened?.recipe.family ?? null,
        cachedBytes: opened ? (opened.cacheStats?.cachedBytes ?? opened.device.size) : null,
        size: opened?.device.size ?? null,
        boot: way && (way.lazy ? { lazy: true, hook: way.hook } : { lazy: false, why: way.why }),
        readBytes: opened ? this.#isos.nbdBytes(e.name) + opened.httpBytes : null,
        originBytes: opened?.cacheStats?.fetchedBytes ?? null,
        downloadBytes: opened ? await opened.downloadBytes() : null,
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

  async cacheView(): Promise<CacheView> {
    const opened = (await this.#images()?.opened()) ?? [];
    const cacheDir = this.#live().cacheDir;
    const cache =
      opened.find((o) => o.stack.cache)?.stack.cache ??
      (existsSync(cacheDir) ? openChunkCache(cacheDir) : null);
    const view: CacheView = {
      dir: this.#live().cacheDir,
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
    const images = this.#images();
    for (const e of this.#live().entries.values()) {
      if (e.kind !== "image" || opened.some((o) => o.entry === e.name)) continue;
      view.offline.push(
        cache && images
          ? await cachedOffline(e, images.source(e), cache)
          : { ...NOTHING_CACHED, entry: e.name },
      );
    }
    for (const [entry, p] of this.#isos.opening) {
      const c = (await p.catch(() => null))?.cacheStats;
      if (c) view.isos.push({ entry, ...c });
    }
    return view;
  }
}
