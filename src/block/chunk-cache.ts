// Verified chunk cache on local disk, over a `next` fetcher. The cache folder is laid out as a
// store (chunks/XXXX/ID.cacnk, zstd, named by the SHA-256 of their content), so a warm cache
// is also a valid local store for offline boots and for casync. A byte quota is kept with LRU
// eviction that never evicts the pinned set; space is reserved before a chunk is written, so
// the folder never holds more than the quota (a chunk bigger than the whole quota is served but
// not cached). Chunks are re-verified on every read from disk: a corrupted cache file is
// dropped and fetched again, never served.
// The block caches of images read by Range (ISO/ and RAW/: ISOs and raw disks by URL) live in
// the same folder and count against the same quota, each as one LRU entry: a block cache not in
// use is evicted whole; one in use is never evicted (its new blocks are then served uncached).
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { readFile, rename, rm, unlink, utimes, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { constants, zstdCompress } from "node:zlib";
import { ChunkCorruptError } from "../store/errors.ts";
import { chunkFile, isChunkId } from "../store/layout.ts";
import { tempPathFor } from "../lib/atomic-file.ts";
import { isZeroChunk, verifyChunk } from "../store/chunks.ts";
import type { IndexChunk } from "../store/caibx.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import type { ChunkFetcher, ChunkRef } from "./chunk-fetcher.ts";

const compress = promisify(zstdCompress);

/** Default quota: 10 GiB. */
export const DEFAULT_CACHE_QUOTA = 10 * 1024 ** 3;
/** How stale a file's mtime may get before an access refreshes it (it records LRU order). */
const TOUCH_INTERVAL_MS = 10 * 60 * 1000;
/** Cache writes allowed to run behind the reads that caused them. */
const MAX_PENDING_WRITES = 64;

export interface CacheStats {
  hits: number;
  misses: number;
  bytesFetched: number;
  evictions: number;
  corruptDropped: number;
}

const EMPTY_STATS: CacheStats = {
  hits: 0,
  misses: 0,
  bytesFetched: 0,
  evictions: 0,
  corruptDropped: 0,
};

/** The settings and counters kept in DIR/cache.json (absent on a new cache). */
export function readCacheSettings(dir: string): {
  quotaBytes?: number;
  stats?: Partial<CacheStats>;
} {
  try {
    return JSON.parse(readFileSync(join(dir, "cache.json"), "utf8")) as {
      quotaBytes?: number;
      stats?: Partial<CacheStats>;
    };
  } catch {
    return {};
  }
}

interface Entry {
  bytes: number;
  touchedMs: number;
  /** A block cache folder (its key is the folder's path), not a chunk. */
  folder?: true;
}

/**
 * The sub-folders of a cache folder that hold block caches: ISOs and raw images by URL
 * (range-cache-device.ts), and chunked images kept uncompressed (unpacked-device.ts).
 */
export const BLOCK_CACHE_ROOTS = ["iso", "raw", "unpacked"];

/** Disk space for block caches, shared with the chunks of one cache folder under its quota. */
export interface CacheSpace {
  /** Folder `dir` is in use and holds `bytes` now: counted, never evicted until released. */
  hold(dir: string, bytes: number): void;
  release(dir: string): void;
  /** Makes room for `bytes` more in `dir` (evicting least recently used data); false if full. */
  reserve(dir: string, bytes: number): Promise<boolean>;
  readonly quotaBytes: number;
}

/** The chunk store inside a cache folder. */
export function cacheChunksDir(dir: string): string {
  return join(dir, "chunks");
}

export class ChunkCache implements CacheSpace {
  readonly dir: string;
  readonly quotaBytes: number;
  readonly stats: CacheStats = { ...EMPTY_STATS };
  /** LRU order: Map iteration order, least recently used first. */
  readonly #entries = new Map<string, Entry>();
  #pinned = new Set<string>();
  #totalBytes = 0;
  #folderBytes = 0;
  #folderCount = 0;
  /** Block cache folders in use, with how many users each. */
  readonly #held = new Map<string, number>();
  readonly #log: Logger;
  readonly #writing = new Map<string, Promise<void>>();

  /** Counters of earlier sessions, from stats.json, so `cache status` reports all-time rates. */
  readonly #earlier: CacheStats;

  constructor(dir: string, options: { quotaBytes?: number; logger?: Logger } = {}) {
    this.dir = resolve(dir);
    this.#log = options.logger ?? silentLogger;
    const saved = readCacheSettings(this.dir);
    this.quotaBytes = options.quotaBytes ?? saved.quotaBytes ?? DEFAULT_CACHE_QUOTA;
    this.#earlier = { ...EMPTY_STATS, ...saved.stats };
    this.#scan();
    if (options.quotaBytes !== undefined) this.saveSettings();
  }

  /** All-time counters: earlier sessions plus this one. */
  get totals(): CacheStats {
    const t = { ...this.#earlier };
    for (const k of Object.keys(t) as (keyof CacheStats)[]) t[k] += this.stats[k];
    return t;
  }

  /** Writes the quota and the all-time counters to cache.json. */
  saveSettings(): void {
    const text = JSON.stringify({ quotaBytes: this.quotaBytes, stats: this.totals }, null, 2);
    try {
      writeFileSync(join(this.dir, "cache.json.tmp"), `${text}\n`);
      renameSync(join(this.dir, "cache.json.tmp"), join(this.dir, "cache.json"));
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, "cannot save cache.json");
    }
  }

  /** Rebuilds the index from the folder (so the cache survives restarts), oldest first. */
  #scan(): void {
    const root = cacheChunksDir(this.dir);
    mkdirSync(root, { recursive: true });
    const found: [string, Entry][] = [];
    for (const sub of readdirSync(root)) {
      let files: string[];
      try {
        files = readdirSync(join(root, sub));
      } catch {
        continue;
      }
      for (const f of files) {
        const path = join(root, sub, f);
        if (f.endsWith(".tmp")) {
          unlinkSync(path); // left by a killed process: never complete
          continue;
        }
        const id = f.replace(/\.cacnk$/, "");
        if (!isChunkId(id)) continue;
        const st = statSync(path);
        found.push([id, { bytes: st.size, touchedMs: st.mtimeMs }]);
      }
    }
    for (const sub of BLOCK_CACHE_ROOTS) {
      let names: string[];
      try {
        names = readdirSync(join(this.dir, sub));
      } catch {
        continue;
      }
      for (const name of names) {
        const folder = join(this.dir, sub, name);
        let touchedMs: number;
        try {
          touchedMs = statSync(join(folder, "identity")).mtimeMs;
        } catch {
          continue; // not a block cache (remembered sources, extracted files)
        }
        let bytes = 0;
        try {
          const data = statSync(join(folder, "data"));
          bytes = data.blocks * 512; // what the sparse file takes on disk
          touchedMs = Math.max(touchedMs, data.mtimeMs);
        } catch {
          // opened, nothing cached yet
        }
        found.push([folder, { bytes, touchedMs, folder: true }]);
      }
    }
    found.sort((a, b) => a[1].touchedMs - b[1].touchedMs);
    for (const [id, e] of found) this.#add(id, e);
  }

  #add(key: string, e: Entry): void {
    this.#entries.set(key, e);
    this.#totalBytes += e.bytes;
    if (e.folder) {
      this.#folderBytes += e.bytes;
      this.#folderCount++;
    }
  }

  get totalBytes(): number {
    return this.#totalBytes;
  }

  get chunkCount(): number {
    return this.#entries.size - this.#folderCount;
  }

  /** Bytes and number of the block caches (ISOs, raw images by URL) in the folder. */
  get blockCaches(): { bytes: number; count: number } {
    return { bytes: this.#folderBytes, count: this.#folderCount };
  }

  has(id: string): boolean {
    const e = this.#entries.get(id);
    return e !== undefined && !e.folder;
  }

  hold(dir: string, bytes: number): void {
    const key = resolve(dir);
    this.#held.set(key, (this.#held.get(key) ?? 0) + 1);
    this.#forget(key); // re-added as most recently used, with the size its owner reports
    this.#add(key, { bytes, touchedMs: Date.now(), folder: true });
  }

  release(dir: string): void {
    const key = resolve(dir);
    const n = (this.#held.get(key) ?? 1) - 1;
    if (n > 0) this.#held.set(key, n);
    else this.#held.delete(key);
  }

  async reserve(dir: string, bytes: number): Promise<boolean> {
    const key = resolve(dir);
    if (!(await this.#reserve(bytes))) return false;
    let e = this.#entries.get(key);
    if (!e) {
      e = { bytes: 0, touchedMs: Date.now(), folder: true };
      this.#add(key, e);
    }
    // #reserve counted the bytes in the total already.
    e.bytes += bytes;
    this.#folderBytes += bytes;
    this.#entries.delete(key);
    this.#entries.set(key, e);
    return true;
  }

  /** Chunks that eviction must never remove (the current release's boot profile). */
  setPinned(ids: Iterable<string>): void {
    this.#pinned = new Set(ids);
  }

  #path(id: string): string {
    return join(cacheChunksDir(this.dir), chunkFile(id));
  }

  /** Verified bytes from disk, or null when absent or found corrupt (then dropped). */
  async get(chunk: ChunkRef): Promise<Buffer | null> {
    const entry = this.#entries.get(chunk.id);
    if (!entry) return null;
    const path = this.#path(chunk.id);
    try {
      const data = await verifyChunk(await readFile(path), chunk, path);
      this.#entries.delete(chunk.id);
      this.#entries.set(chunk.id, entry);
      const now = Date.now();
      if (now - entry.touchedMs > TOUCH_INTERVAL_MS) {
        entry.touchedMs = now;
        utimes(path, new Date(now), new Date(now)).catch(() => undefined);
      }
      return data;
    } catch (err) {
      if (err instanceof ChunkCorruptError) this.stats.corruptDropped++;
      this.#log.warn(
        { chunk: chunk.id, err: (err as Error).message },
        "cache file unreadable or corrupt; dropping it",
      );
      this.#forget(chunk.id);
      await unlink(path).catch(() => undefined);
      return null;
    }
  }

  #forget(id: string): void {
    const e = this.#entries.get(id);
    if (!e) return;
    this.#entries.delete(id);
    this.#totalBytes -= e.bytes;
    if (e.folder) {
      this.#folderBytes -= e.bytes;
      this.#folderCount--;
    }
  }

  /**
   * Makes room for `bytes` more (accounting is synchronous so concurrent writers cannot
   * overcommit; the evicted files are gone before the caller writes). False when only pinned
   * chunks are left to evict.
   */
  async #reserve(bytes: number): Promise<boolean> {
    if (bytes > this.quotaBytes) return false;
    const victims: string[] = [];
    const folders: string[] = [];
    for (const [id, e] of this.#entries) {
      if (this.#totalBytes + bytes <= this.quotaBytes) break;
      if (this.#pinned.has(id) || this.#writing.has(id) || this.#held.has(id)) continue;
      this.#forget(id);
      this.stats.evictions++;
      if (e.folder) folders.push(id);
      else victims.push(this.#path(id));
    }
    const fits = this.#totalBytes + bytes <= this.quotaBytes;
    if (fits) this.#totalBytes += bytes;
    if (folders.length) this.#log.info({ folders }, "evicted block caches not in use");
    await Promise.all([
      ...victims.map((p) => unlink(p).catch(() => undefined)),
      ...folders.map((d) => rm(d, { recursive: true, force: true }).catch(() => undefined)),
    ]);
    return fits;
  }

  /**
   * Stores verified bytes atomically: the zstd frame they arrived in when given (no work),
   * else compressed here. Space is reserved before the write.
   */
  async put(chunk: ChunkRef, data: Buffer, frame: Buffer | null = null): Promise<void> {
    if (this.#entries.has(chunk.id) || this.#writing.has(chunk.id)) return;
    const job = (async () => {
      const compressed =
        frame ?? (await compress(data, { params: { [constants.ZSTD_c_compressionLevel]: 3 } }));
      if (!(await this.#reserve(compressed.length))) return;
      const path = this.#path(chunk.id);
      const tmp = tempPathFor(path);
      try {
        mkdirSync(join(cacheChunksDir(this.dir), chunk.id.slice(0, 4)), { recursive: true });
        await writeFile(tmp, compressed, { flag: "wx" });
        await rename(tmp, path);
        this.#entries.set(chunk.id, { bytes: compressed.length, touchedMs: Date.now() });
      } catch (err) {
        this.#totalBytes -= compressed.length;
        await unlink(tmp).catch(() => undefined);
        this.#log.warn(
          { chunk: chunk.id, err: (err as Error).message },
          "cannot write to the chunk cache",
        );
      }
    })();
    this.#writing.set(chunk.id, job);
    try {
      await job;
    } finally {
      this.#writing.delete(chunk.id);
    }
  }

  /** Waits for every cache write under way. */
  async drain(): Promise<void> {
    await Promise.all(this.#writing.values());
  }

  /** A fetcher layer: serve from this cache, else from `next`, then keep what `next` gave. */
  layer(next: ChunkFetcher): ChunkFetcher {
    return {
      fetch: async (chunk) => {
        const cached = await this.get(chunk);
        if (cached) {
          this.stats.hits++;
          return cached;
        }
        this.stats.misses++;
        const got = next.fetchWithFrame
          ? await next.fetchWithFrame(chunk)
          : { data: await next.fetch(chunk), frame: null };
        this.stats.bytesFetched += got.data.length;
        // The read does not wait for the cache file unless writes fall far behind.
        const stored = this.put(chunk, got.data, got.frame).catch((err: Error) =>
          this.#log.warn({ chunk: chunk.id, err: err.message }, "cannot cache chunk"),
        );
        if (this.#writing.size > MAX_PENDING_WRITES) await stored;
        return got.data;
      },
      has: (chunk) => this.has(chunk.id),
      close: async () => {
        await this.drain();
        await next.close();
      },
    };
  }
}

const open = new Map<string, ChunkCache>();

/** One cache object per folder per process, shared by every export that names the folder. */
export function openChunkCache(
  dir: string,
  options: { quotaBytes?: number; logger?: Logger } = {},
): ChunkCache {
  const key = resolve(dir);
  let cache = open.get(key);
  if (!cache) {
    cache = new ChunkCache(key, options);
    open.set(key, cache);
  }
  return cache;
}

export interface CacheCoverage {
  /** Distinct non-zero chunks wanted. */
  needed: number;
  missing: number;
  bytesMissing: number;
}

/** How many of `chunks` (an image's, or its boot set) the cache lacks; zero chunks need nothing. */
export function cacheCoverage(
  cache: { has(id: string): boolean },
  chunks: IndexChunk[],
): CacheCoverage {
  const unique = new Map(chunks.filter((ch) => !isZeroChunk(ch)).map((ch) => [ch.id, ch.size]));
  const missing = [...unique].filter(([id]) => !cache.has(id));
  return {
    needed: unique.size,
    missing: missing.length,
    bytesMissing: missing.reduce((n, [, size]) => n + size, 0),
  };
}
