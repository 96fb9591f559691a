// Builds the block stack for one source, top to bottom:
//   tracer → copy-on-write overlay → prefetcher or boot-pack pieces → unpacked copy → chunked
//   image → chunk cache → boot pack → mirror set
// The release's own boot profile (when it has one) pins its chunks (and its pack's pieces) in
// the cache; its boot pack is downloaded in the background at open, or else the profile is
// prefetched.
// or, for a plain file or http:// URL, tracer → overlay → file/HTTP device.
import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { join } from "node:path";
import { ChunkMissingError, FetchError, NotFoundError, UsageError } from "../store/errors.ts";
import { decodePackTable, packTableBytes, profilePath } from "../store/boot-pack.ts";
import type { PackEntry, PackInfo } from "../store/boot-pack.ts";
import type { BlobIndex } from "../store/caibx.ts";
import { indexPath, latestPath, releasePath } from "../store/layout.ts";
import { indexBytesFor, MAX_PROFILE_BYTES, MAX_RELEASE_FILE_BYTES } from "../store/limits.ts";
import type { ReadOptions } from "../store/store.ts";
import { openImage } from "../store/source.ts";
import type { OpenedImage } from "../store/source.ts";
import { isUrl, openStore } from "../store/open-store.ts";
import type { TrustPolicy } from "../store/trust.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import type { BlockDevice } from "./block-device.ts";
import { openChunkCache } from "./chunk-cache.ts";
import type { ChunkCache } from "./chunk-cache.ts";
import type { ChunkFetcher } from "./chunk-fetcher.ts";
import { ChunkedDevice } from "./chunked-device.ts";
import { CowDevice } from "./cow-device.ts";
import { FileDevice } from "./file-device.ts";
import { HttpDevice } from "./http-device.ts";
import { MirrorSet } from "./mirror-set.ts";
import { openCachedUrl, RangeCacheDevice } from "./range-cache-device.ts";
import type { MirrorOptions } from "./mirror-set.ts";
import type { MirrorStats } from "./mirror-set.ts";
import { PrefetchDevice } from "./prefetch-device.ts";
import type { PrefetchStats } from "./prefetch-device.ts";
import { PackFetcher } from "./pack-fetcher.ts";
import { PieceDevice } from "./piece-device.ts";
import type { PieceStats } from "./piece-device.ts";
import type { PackStats } from "./pack-fetcher.ts";
import { profileChunks, readProfile, readReleaseProfile } from "../store/profile.ts";
import type { ProfileEntry } from "../store/profile.ts";
import { TraceDevice } from "./trace-device.ts";
import { UNPACKED_MEMORY_BYTES, UnpackedDevice } from "./unpacked-device.ts";

export interface StackOptions {
  /** Store roots (directories or URLs); several are mirrors of one store. */
  stores?: string[];
  /** Chunk cache folder (also a local store for offline boots). */
  cache?: string;
  cacheQuotaBytes?: number;
  /** Copy-on-write overlay file: makes the device writable. */
  cow?: string;
  /** Record first accesses to this boot profile file. */
  trace?: string;
  /** Prefetch the regions of this boot profile. */
  profile?: string;
  prefetchStreams?: number;
  /**
   * Keep the image's chunks uncompressed in the cache folder too (default: yes with a cache):
   * warm reads are then a pread each, at the cost of that disk space.
   */
  unpacked?: boolean;
  /** Use only the cache; never the network. */
  offline?: boolean;
  policy: TrustPolicy;
  /** Each chunk fetch from a mirror, timed (metrics). */
  onFetch?: MirrorOptions["onFetch"];
  logger?: Logger;
}

export interface DeviceStack {
  device: BlockDevice;
  /** What was opened, for messages: NAME@REV, a path, a URL. */
  label: string;
  /** What the overlay is bound to: the index digest, or the file/URL and size. */
  baseId: string;
  image: OpenedImage | null;
  cache: ChunkCache | null;
  mirrors: MirrorSet | null;
  prefetch: PrefetchStats | null;
  /** The release's boot pack download, when it has one. */
  pack: PackStats | null;
  /** Reads served from the boot pack's pieces (format 2 packs). */
  pieces: PieceStats | null;
  /** Where the boot profile in use came from: --profile, the release, or none. */
  profileSource: string | null;
  mirrorStats(): MirrorStats[];
  close(): Promise<void>;
}

/** A plain file or URL rather than an image from a store. */
function isRawSource(source: string, options: StackOptions): boolean {
  if (/\.(json|caibx)$/i.test(source)) return false;
  if (isUrl(source)) return true;
  return !options.offline && !options.stores?.length && existsSync(source);
}

/** A plain image (raw disk, ISO) as a read-only device: an http(s) URL by Range, or a file. */
export function openRawDevice(source: string): Promise<BlockDevice> {
  return isUrl(source) ? HttpDevice.open(source) : FileDevice.open(source, { readOnly: true });
}

/** Keeps the release, its signature, its index and the `latest` pointer in the cache folder. */
async function rememberRelease(image: OpenedImage, cacheDir: string): Promise<void> {
  const r = image.release;
  if (!r) return;
  const reader = image.chunks.reader;
  const small = { maxBytes: MAX_RELEASE_FILE_BYTES };
  const files: [string, ReadOptions][] = [
    [releasePath(r.release.name, r.release.revision), { ...small, what: "release" }],
    [`${releasePath(r.release.name, r.release.revision)}.minisig`, { ...small, what: "signature" }],
    [indexPath(r.release.index), { maxBytes: indexBytesFor(r.release.chunks), what: "index" }],
  ];
  if (r.release.profile) {
    files.push([profilePath(r.release.profile), { maxBytes: MAX_PROFILE_BYTES, what: "profile" }]);
  }
  for (const [file, bounds] of files) {
    const target = join(cacheDir, file);
    if (await stat(target).catch(() => null)) continue;
    let bytes: Buffer;
    try {
      bytes = await reader.read(file, bounds);
    } catch (err) {
      if (err instanceof NotFoundError) continue; // an unsigned release has no .minisig
      throw err;
    }
    await writeFileAtomic(target, bytes);
  }
  const latest = join(cacheDir, latestPath(r.release.name));
  const current = Number(await readFile(latest, "utf8").catch(() => "0"));
  if (!(current >= r.release.revision)) await writeFileAtomic(latest, `${r.release.revision}\n`);
}

/** The checked table of a format 2 pack kept in the cache folder; none when it is not there. */
async function keptPackTable(
  file: string | null,
  info: PackInfo,
  index: BlobIndex,
  log: Logger,
): Promise<readonly PackEntry[]> {
  if (!file) return [];
  try {
    if ((await stat(file)).size !== packTableBytes(info)) return [];
    return decodePackTable(await readFile(file), info, file, index.size);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT")
      log.warn({ err: (err as Error).message }, "the boot pack's table in the cache is unusable");
    return [];
  }
}

class OfflineFetcher implements ChunkFetcher {
  fetch(chunk: { id: string }): Promise<Buffer> {
    return Promise.reject(
      new ChunkMissingError(chunk.id, "the cache (running offline: the network is not used)"),
    );
  }
  async close(): Promise<void> {}
}

export async function openDeviceStack(source: string, options: StackOptions): Promise<DeviceStack> {
  const log = options.logger ?? silentLogger;
  let device: BlockDevice;
  let label = source;
  let baseId: string;
  let image: OpenedImage | null = null;
  let cache: ChunkCache | null = null;
  let mirrors: MirrorSet | null = null;
  let prefetch: PrefetchDevice | null = null;
  let pack: PackFetcher | null = null;
  let pieces: Promise<readonly PackEntry[]> | null = null;
  let pieceStats: PieceStats | null = null;
  let profile: ProfileEntry[] | null = options.profile ? readProfile(options.profile) : null;
  let profileSource: string | null = options.profile ?? null;

  if (isRawSource(source, options)) {
    if (options.policy.trusted.length > 0) {
      // Trusted keys would be silently ignored: a plain image has nothing they could check.
      throw new UsageError(
        `Refusing ${source}: a plain file or URL carries no signature, so the trusted keys cannot be checked against it; publish it as a signed release (inetboot pack --key) and open NAME, or drop the trusted keys`,
      );
    }
    // A raw image by URL is kept in the cache folder in blocks (re-runs and --offline read it
    // there); a local file is read in place.
    const raw =
      options.cache && isUrl(source)
        ? await openCachedUrl(source, join(options.cache, "raw"), {
            offline: options.offline,
            logger: log,
            space: openChunkCache(options.cache, {
              quotaBytes: options.cacheQuotaBytes,
              logger: log,
            }),
          })
        : await openRawDevice(source);
    // The overlay of a cached URL is bound to its content's identity (ETag), not only its name.
    baseId = raw instanceof RangeCacheDevice ? raw.identity : `${source} ${raw.size}`;
    device = raw;
  } else {
    const stores = options.stores ?? [];
    let fromCache = options.offline === true;
    if (options.offline && !options.cache)
      throw new UsageError("--offline needs --cache DIR: the cache is the only source then");
    if (options.offline) {
      image = await openImage(source, {
        store: options.cache,
        policy: options.policy,
        record: true,
      });
    } else {
      try {
        image = await openImage(source, {
          store: stores[0],
          policy: options.policy,
          record: true,
          indexCache: options.cache,
        });
      } catch (err) {
        fromCache = true;
        if (!(err instanceof FetchError) || !options.cache) throw err;
        log.warn(
          { err: err.message },
          "the store cannot be reached; using the release kept in the cache",
        );
        image = await openImage(source, {
          store: options.cache,
          policy: options.policy,
          record: true,
        });
      }
    }
    label = image.label;
    baseId = image.release ? `sha256:${image.release.release.index}` : `${source}`;
    let fetcher: ChunkFetcher;
    let unusedReader: { close(): Promise<void> } | null = null;
    if (options.offline) {
      fetcher = new OfflineFetcher();
    } else {
      const prefix = image.chunks.prefix;
      // One store that served the release: read chunks through the same reader. Otherwise
      // (mirrors, or a release taken from the cache) one reader per store; with several, one
      // attempt each: failing over beats retrying a sick mirror.
      const sameReader = stores.length <= 1 && !fromCache;
      const sources = sameReader
        ? [image.chunks]
        : stores.map((s) => ({
            reader: openStore(s, stores.length > 1 ? { attempts: 1 } : {}),
            prefix,
          }));
      // (The release's own reader is closed below, after the cache has kept the release.)
      if (!sameReader) unusedReader = image.chunks.reader;
      mirrors = new MirrorSet(sources, { logger: log, onFetch: options.onFetch });
      if (sources.length > 1) await mirrors.probe();
      fetcher = mirrors;
    }
    const digest = image.release?.release.profile;
    if (!profile && digest) {
      let published: ProfileEntry[] | null | undefined;
      try {
        published = await readReleaseProfile(image.chunks.reader, digest);
      } catch (err) {
        // The store cannot be reached for it: boot without the plan. Any other failure (too
        // large, tampered, malformed) is the store's damage and stops the open.
        if (!(err instanceof FetchError)) throw err;
        log.warn({ err: err.message }, "cannot fetch the release's boot profile");
      }
      if (published) {
        profile = published;
        profileSource = `${label} (published with the release)`;
      } else if (published === null) {
        log.warn(
          { profile: image.chunks.reader.describe(profilePath(digest)) },
          "the release names a boot profile the store does not have; booting without it",
        );
      }
    }
    if (options.cache) {
      cache = openChunkCache(options.cache, { quotaBytes: options.cacheQuotaBytes, logger: log });
      await rememberRelease(image, options.cache).catch((err: Error) =>
        log.warn({ err: err.message }, "cannot keep the release in the cache"),
      );
    }
    const packInfo = options.profile ? null : (image.release?.release.pack ?? null);
    // A format 2 pack places pieces in the image: its table is kept in the cache folder, for
    // an offline open or a store that cannot be reached.
    const tableFile =
      cache && packInfo?.format === 2 ? join(cache.dir, "packs", `${packInfo.digest}.table`) : null;
    if (packInfo && mirrors) {
      // The release's boot set, in a few large requests; the mirrors serve everything else.
      pack = new PackFetcher(fetcher, mirrors.readers, packInfo, {
        cache,
        logger: log,
        index: image.index,
        tableFile: tableFile ?? undefined,
      });
      fetcher = pack;
    }
    if (packInfo?.format === 2) {
      const kept = (): Promise<readonly PackEntry[]> =>
        keptPackTable(tableFile, packInfo, image!.index, log);
      pieces = pack ? pack.entries.then((e) => (e.length > 0 ? e : kept())) : kept();
    }
    if (cache) fetcher = cache.layer(fetcher);
    await unusedReader?.close();
    const unpacked = cache !== null && options.unpacked !== false;
    // With the unpacked copy the page cache holds the hot bytes; memory only bridges its writes.
    const chunked = new ChunkedDevice(image.index, fetcher, {
      memoryBytes: unpacked ? UNPACKED_MEMORY_BYTES : undefined,
    });
    if (cache && profile) {
      // The boot set is pinned: eviction never costs the next offline boot.
      cache.setPinned(profileChunks(image.index, profile).map((c) => c.id));
    }
    device =
      cache && unpacked
        ? await UnpackedDevice.open(chunked, join(cache.dir, "unpacked"), {
            space: cache,
            logger: log,
          })
        : chunked;
    if (pieces) {
      // Reads of what the boot read come from the pack's pieces, not whole chunks.
      const layer = new PieceDevice(device, image.index, pieces, fetcher, { logger: log });
      device = layer;
      pieceStats = layer.stats;
      if (cache && profile) {
        const pinned = profileChunks(image.index, profile).map((c) => c.id);
        void layer.pieceIds().then((ids) => cache!.setPinned([...pinned, ...ids]));
      }
    }
  }
  if (profile && !pack) {
    prefetch = new PrefetchDevice(device, profile, {
      streams: options.prefetchStreams,
      logger: log,
    });
    device = prefetch;
  }
  if (options.cow) device = await CowDevice.open(device, options.cow, { baseId });
  if (options.trace) device = new TraceDevice(device, options.trace);
  const top = device;
  return {
    device: top,
    label,
    baseId,
    image,
    cache,
    mirrors,
    prefetch: prefetch?.stats ?? null,
    pack: pack?.stats ?? null,
    pieces: pieceStats,
    profileSource,
    mirrorStats: () => mirrors?.stats ?? [],
    close: () => top.close(),
  };
}
