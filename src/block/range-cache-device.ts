// A disk cache for a plain image read over the network (an ISO or raw disk by URL): the image
// is cut into fixed blocks kept in a sparse file, each with its SHA-256 in an append-only log,
// so a re-boot or the next machine reads them locally. A cached block is checked against its
// hash once per run and fetched again when its bytes no longer match: it is never served.
// The cache belongs to the source's identity (URL, size, ETag or Last-Modified): a file
// replaced on the server starts a fresh cache. With a CacheSpace (the chunk cache of the same
// folder) it keeps to that folder's quota: space is reserved before blocks are written, and
// when the quota is full of data in use, blocks are served without being kept.
import { createHash } from "node:crypto";
import { open, readFile, truncate } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { silentLogger } from "../lib/log.ts";
import { cacheFolder, claimCacheFolder } from "./cache-folder.ts";
import type { Logger } from "../lib/log.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { BlockIoError, checkRange, dataExtent, ReadOnlyError } from "./block-device.ts";
import type { BlockDevice, Extent } from "./block-device.ts";
import type { CacheSpace } from "./chunk-cache.ts";
import { HttpDevice } from "./http-device.ts";
import { InPlaceReads } from "./in-place-reads.ts";

const RECORD = 4 + 32;

export interface RangeCacheStats {
  /** Blocks read from the cache / fetched from the source. */
  hits: number;
  misses: number;
  fetchedBytes: number;
  /** Bytes of the image now on local disk. */
  cachedBytes: number;
  /** Cached blocks that failed their check and were fetched again. */
  repaired: number;
  /** Bytes fetched but not kept: the cache's quota was full of data in use. */
  unkeptBytes: number;
}

export interface RangeCacheOptions {
  blockSize?: number;
  /** Never read the source: a block not in the cache is an I/O error naming what is missing. */
  offline?: boolean;
  logger?: Logger;
  /** The quota this cache counts against (else it is unbounded). */
  space?: CacheSpace;
}

const sha256 = (b: Uint8Array): Buffer => createHash("sha256").update(b).digest();

export class RangeCacheDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  readonly blockSize: number;
  readonly dir: string;
  /** What the cache belongs to (URL, size, validator). */
  readonly identity: string;
  readonly stats: RangeCacheStats = {
    hits: 0,
    misses: 0,
    fetchedBytes: 0,
    cachedBytes: 0,
    repaired: 0,
    unkeptBytes: 0,
  };
  readonly #next: BlockDevice;
  readonly #data: FileHandle;
  readonly #inPlace = new InPlaceReads();
  readonly #log: FileHandle;
  readonly #hashes: Map<number, Buffer>;
  readonly #verified = new Set<number>();
  readonly #pending = new Map<number, Promise<Buffer>>();
  /** Hashes of damaged blocks being fetched again: the source must send the same bytes. */
  readonly #repairing = new Map<number, Buffer>();
  readonly #offline: boolean;
  readonly #logger: Logger;
  readonly #space: CacheSpace | null;
  #warnedFull = false;

  private constructor(
    next: BlockDevice,
    identity: string,
    dir: string,
    data: FileHandle,
    log: FileHandle,
    hashes: Map<number, Buffer>,
    blockSize: number,
    options: RangeCacheOptions,
  ) {
    this.#next = next;
    this.identity = identity;
    this.size = next.size;
    this.dir = dir;
    this.#data = data;
    this.#log = log;
    this.#hashes = hashes;
    this.blockSize = blockSize;
    this.#offline = options.offline ?? false;
    this.#logger = options.logger ?? silentLogger;
    this.stats.cachedBytes = [...hashes.keys()].reduce((n, b) => n + this.#blockLength(b), 0);
    this.#space = options.space ?? null;
    this.#space?.hold(dir, this.stats.cachedBytes);
  }

  /** The cache folder of a source's identity under `root`. */
  static folder(root: string, identity: string): string {
    return cacheFolder(root, identity);
  }

  /** Caches `next` (identified by `identity`) under `root`. */
  static async open(
    next: BlockDevice,
    root: string,
    identity: string,
    options: RangeCacheOptions = {},
  ): Promise<RangeCacheDevice> {
    const blockSize = options.blockSize ?? 1024 * 1024;
    const dir = RangeCacheDevice.folder(root, identity);
    // New, or another block size: start empty.
    await claimCacheFolder(dir, `${identity}\nblock ${blockSize}\n`);
    const hashes = new Map<number, Buffer>();
    const blocks = Math.ceil(next.size / blockSize);
    const log = await readFile(join(dir, "blocks")).catch(() => Buffer.alloc(0));
    // A torn last record (a kill mid-append) is ignored; its block is fetched again.
    for (let at = 0; at + RECORD <= log.length; at += RECORD) {
      const block = log.readUInt32LE(at);
      if (block < blocks) hashes.set(block, Buffer.from(log.subarray(at + 4, at + RECORD)));
    }
    const whole = log.length - (log.length % RECORD);
    if (whole !== log.length) await truncate(join(dir, "blocks"), whole);
    const data = await open(join(dir, "data"), "a+").then(async (fh) => {
      await fh.close();
      return open(join(dir, "data"), "r+");
    });
    const logFh = await open(join(dir, "blocks"), "a");
    return new RangeCacheDevice(next, identity, dir, data, logFh, hashes, blockSize, options);
  }

  /** Whether every byte of [offset, offset+length) is in the cache. */
  has(offset: number, length: number): boolean {
    if (length === 0) return true;
    const last = Math.floor((offset + length - 1) / this.blockSize);
    for (let b = Math.floor(offset / this.blockSize); b <= last; b++) {
      if (!this.#hashes.has(b)) return false;
    }
    return true;
  }

  #blockLength(block: number): number {
    return Math.min(this.blockSize, this.size - block * this.blockSize);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    if (length === 0) return Buffer.alloc(0);
    const B = this.blockSize;
    const first = Math.floor(offset / B);
    const last = Math.floor((offset + length - 1) / B);
    const parts: Promise<Buffer>[] = [];
    let runStart = -1;
    const endRun = (end: number): void => {
      if (runStart < 0) return;
      for (let b = runStart; b < end; b++)
        parts[b - first] = this.#pending.get(b) as Promise<Buffer>;
      runStart = -1;
    };
    for (let b = first; b <= last; b++) {
      const pending = this.#pending.get(b);
      if (pending || this.#hashes.has(b)) {
        endRun(b);
        parts[b - first] = pending ?? this.#local(b);
      } else if (runStart < 0) {
        runStart = b;
        // Missing blocks in a row are fetched in one read of the source.
        let end = b + 1;
        while (end <= last && !this.#hashes.has(end) && !this.#pending.has(end)) end++;
        this.#fetch(b, end);
        endRun(end);
        b = end - 1;
      }
    }
    if (first === last) {
      // Within one block (a reader going block by block): no copy.
      const block = await parts[0];
      return block.subarray(offset - first * B, offset - first * B + length);
    }
    const blocks = await Promise.all(parts);
    const out = Buffer.allocUnsafe(length);
    for (let i = 0; i < blocks.length; i++) {
      const blockStart = (first + i) * B;
      const from = Math.max(offset, blockStart);
      const to = Math.min(offset + length, blockStart + blocks[i].length);
      blocks[i].copy(out, from - offset, from - blockStart, to - blockStart);
    }
    return out;
  }

  /** Whether every block of [offset, offset + length) was checked this run and is not changing. */
  #checked(offset: number, length: number): boolean {
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + length - 1) / this.blockSize);
    for (let b = first; b <= last; b++)
      if (!this.#verified.has(b) || this.#pending.has(b)) return false;
    return true;
  }

  /** A small read of blocks checked this run, in place (see InPlaceReads). */
  readIntoNow(offset: number, into: Buffer): boolean {
    if (!this.#inPlace.allowed(into.length)) return false;
    checkRange(this, offset, into.length);
    if (!this.#checked(offset, into.length)) return false;
    // A data file shorter than the blocks it logged: readInto reads them the checked way.
    if (this.#inPlace.read(this.#data.fd, into, offset) < into.length) return false;
    this.stats.hits += blocksOf(offset, into.length, this.blockSize);
    return true;
  }

  /**
   * Fills `into` with the bytes at `offset`: one read of the data file when every block there
   * was checked this run (a cached ISO served again), else through read().
   */
  async readInto(offset: number, into: Buffer): Promise<void> {
    const length = into.length;
    checkRange(this, offset, length);
    if (length === 0) return;
    if (!this.#checked(offset, length)) {
      (await this.read(offset, length)).copy(into);
      return;
    }
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#data.read(into, done, length - done, offset + done);
      if (bytesRead === 0) {
        // The data file is shorter than blocks it logged: read them the checked way.
        (await this.read(offset, length)).copy(into);
        return;
      }
      done += bytesRead;
    }
    this.stats.hits += blocksOf(offset, length, this.blockSize);
  }

  /** Fetches blocks [start, end) in one read; registers a pending promise per block. */
  #fetch(start: number, end: number): void {
    const B = this.blockSize;
    const whole = (async (): Promise<Buffer[]> => {
      if (this.#offline) {
        throw new BlockIoError(
          `bytes ${start * B}-${Math.min(end * B, this.size) - 1} are not in the cache ${this.dir} (offline: the network is not used)`,
        );
      }
      const length = Math.min(end * B, this.size) - start * B;
      const data = await this.#next.read(start * B, length);
      this.stats.misses += end - start;
      this.stats.fetchedBytes += length;
      const blocks: Buffer[] = [];
      const records: Buffer[] = [];
      for (let b = start; b < end; b++) {
        const block = data.subarray((b - start) * B, (b - start) * B + this.#blockLength(b));
        blocks.push(block);
        const hash = sha256(block);
        const before = this.#repairing.get(b);
        if (before && !before.equals(hash)) {
          // Same identity (URL, size, ETag), other bytes: the cache's earlier copy is what was
          // checked (and perhaps verified whole), so the new bytes are not taken.
          throw new BlockIoError(
            `the source sent other bytes for block ${b} (offset ${b * B}) than when it was cached, under the same ETag; refusing them (delete ${this.dir} to start over)`,
          );
        }
        const record = Buffer.alloc(RECORD);
        record.writeUInt32LE(b, 0);
        hash.copy(record, 4);
        records.push(record);
      }
      let fresh = 0;
      for (let b = start; b < end; b++) if (!this.#hashes.has(b)) fresh += this.#blockLength(b);
      if (this.#space && fresh > 0 && !(await this.#space.reserve(this.dir, fresh))) {
        this.stats.unkeptBytes += length;
        if (!this.#warnedFull) {
          this.#warnedFull = true;
          this.#logger.warn(
            { cache: this.dir, quotaBytes: this.#space.quotaBytes },
            "the cache quota is full of data in use: blocks of this image are served but not kept; raise the quota (--cache-quota) or free the cache",
          );
        }
        return blocks;
      }
      await this.#data.write(data, 0, data.length, start * B);
      // The log entry after the data: a block in the log has its bytes written (or fails the
      // check and is fetched again).
      await this.#log.write(Buffer.concat(records));
      for (let b = start; b < end; b++) {
        if (!this.#hashes.has(b)) this.stats.cachedBytes += this.#blockLength(b);
        this.#hashes.set(b, records[b - start].subarray(4));
        this.#verified.add(b);
        this.#repairing.delete(b);
      }
      return blocks;
    })();
    for (let b = start; b < end; b++) {
      const p = whole.then((blocks) => blocks[b - start]);
      p.catch(() => {}); // observed by the reader; not an unhandled rejection meanwhile
      this.#pending.set(b, p);
      void whole.then(
        () => this.#pending.delete(b),
        () => this.#pending.delete(b),
      );
    }
  }

  async #local(block: number): Promise<Buffer> {
    const length = this.#blockLength(block);
    const buf = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.#data.read(buf, 0, length, block * this.blockSize);
    if (this.#verified.has(block) && bytesRead === length) {
      this.stats.hits++;
      return buf;
    }
    const expected = this.#hashes.get(block);
    if (bytesRead === length && expected && sha256(buf).equals(expected)) {
      this.#verified.add(block);
      this.stats.hits++;
      return buf;
    }
    this.#logger.warn(
      { cache: this.dir, block, offset: block * this.blockSize },
      "a cached block does not match its hash; fetching it again",
    );
    this.stats.repaired++;
    if (expected) this.#repairing.set(block, expected);
    this.#hashes.delete(block);
    this.#verified.delete(block);
    this.stats.cachedBytes -= length;
    if (!this.#pending.has(block)) this.#fetch(block, block + 1);
    return this.#pending.get(block) as Promise<Buffer>;
  }

  write(): Promise<void> {
    return Promise.reject(new ReadOnlyError("A cached network image is read-only"));
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return Promise.resolve(dataExtent(offset, length));
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#pending.values()]);
    await this.#data.close();
    await this.#log.close();
    this.#space?.release(this.dir);
    await this.#next.close();
  }
}

/**
 * An image by http(s) URL through a block cache under `root`: online, opened by Range (its
 * identity remembered for offline use); offline, served from the cache alone, with the size and
 * identity the last online open saw.
 */
export async function openCachedUrl(
  url: string,
  root: string,
  options: { offline?: boolean; logger?: Logger; space?: CacheSpace; blockSize?: number } = {},
): Promise<RangeCacheDevice> {
  const remembered = join(
    root,
    "sources",
    createHash("sha256").update(url).digest("hex").slice(0, 32),
  );
  if (!options.offline) {
    const http = await HttpDevice.open(url);
    const identity = `${url}\n${http.size}\n${http.validator ?? ""}`;
    await writeFileAtomic(remembered, identity);
    return RangeCacheDevice.open(http, root, identity, {
      logger: options.logger,
      space: options.space,
      blockSize: options.blockSize,
    });
  }
  const identity = await readFile(remembered, "utf8").catch(() => {
    throw new BlockIoError(
      `${url} was never opened online, so nothing of it is cached in ${root}; run once with the network`,
    );
  });
  const size = Number(identity.split("\n")[1]);
  const nothing: BlockDevice = {
    size,
    readOnly: true,
    read: () => Promise.reject(new BlockIoError("offline")),
    close: () => Promise.resolve(),
  };
  return RangeCacheDevice.open(nothing, root, identity, {
    logger: options.logger,
    space: options.space,
    blockSize: options.blockSize,
    offline: true,
  });
}

/** How many blocks of `blockSize` the bytes [offset, offset + length) touch. */
function blocksOf(offset: number, length: number, blockSize: number): number {
  return Math.floor((offset + length - 1) / blockSize) - Math.floor(offset / blockSize) + 1;
}
