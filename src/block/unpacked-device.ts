// A chunked image's verified bytes kept uncompressed on local disk, beside the chunk cache: a
// sparse file holding each chunk at its own offset, so a warm read is one pread from the page
// cache (as `nbdkit file` serves a raw image) instead of a file read, a decompression and a hash
// per chunk, and a working set larger than the memory tier costs no re-decompression.
// A chunk is written only with bytes its fetch verified, and recorded in an append-only log
// after them. Its first read in a run checks it again against its ID (the SHA-256 of its bytes):
// a damaged or torn file is caught there and the chunk fetched again, never served. All-zero
// chunks are never written and always read as zeros, whatever the file holds there.
import { createHash } from "node:crypto";
import { read as readFd } from "node:fs";
import { open, readFile, truncate } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { isZeroChunk } from "../store/chunks.ts";
import type { BlobIndex } from "../store/caibx.ts";
import { silentLogger } from "../lib/log.ts";
import { cacheFolder, claimCacheFolder } from "./cache-folder.ts";
import type { Logger } from "../lib/log.ts";
import { checkRange, ReadOnlyError, settleAll } from "./block-device.ts";
import type { BlockDevice, Extent } from "./block-device.ts";
import type { CacheSpace } from "./chunk-cache.ts";
import type { ChunkedDevice } from "./chunked-device.ts";
import { InPlaceReads } from "./in-place-reads.ts";

/** Chunk states. */
const ABSENT = 0;
/** In the log, not yet checked this run. */
const LOGGED = 1;
/** Being written. */
const WRITING = 2;
/** Written or checked this run: a read may take it from the file as it is. */
const VERIFIED = 3;
/** All zeros: never in the file. */
const ZERO = 4;

/** The memory tier of a chunked image under an unpacked copy: it only bridges the writes. */
export const UNPACKED_MEMORY_BYTES = 32 * 1024 * 1024;

/** Writes allowed to run behind the reads that caused them before a read waits for them. */
const MAX_PENDING_WRITES = 64;

export interface UnpackedStats {
  /** Reads served by the file alone / reads that needed a chunk fetched or checked. */
  fileReads: number;
  slowReads: number;
  /** Chunks checked against their ID (first read this run) / found damaged and fetched again. */
  checked: number;
  repaired: number;
  /** Bytes of the image now in the file. */
  cachedBytes: number;
  /** Bytes of chunks not kept: the cache's quota was full of data in use. */
  unkeptBytes: number;
}

export interface UnpackedOptions {
  space?: CacheSpace;
  logger?: Logger;
}

/** What an index's unpacked copy belongs to: its size and every chunk, in order. */
export function indexIdentity(index: BlobIndex): string {
  const h = createHash("sha256").update(`${index.size}\n`);
  for (const c of index.chunks) h.update(c.id);
  return `index sha256:${h.digest("hex")}`;
}

/** Fills `into` from `position` of the file; beyond the file's end reads as zeros. */
function pread(fd: number, into: Buffer, position: number): Promise<void> {
  const length = into.length;
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      readFd(fd, into, done, length - done, position + done, (err, n) => {
        if (err) return reject(err);
        if (n === 0) {
          into.fill(0, done);
          return resolve();
        }
        if (done + n < length) return step(done + n);
        resolve();
      });
    };
    step(0);
  });
}

export class UnpackedDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  readonly dir: string;
  readonly stats: UnpackedStats = {
    fileReads: 0,
    slowReads: 0,
    checked: 0,
    repaired: 0,
    cachedBytes: 0,
    unkeptBytes: 0,
  };
  readonly #chunked: ChunkedDevice;
  readonly #index: BlobIndex;
  readonly #data: FileHandle;
  readonly #log: FileHandle;
  readonly #state: Uint8Array;
  readonly #checking = new Map<number, Promise<Buffer>>();
  readonly #writes = new Set<Promise<void>>();
  readonly #space: CacheSpace | null;
  readonly #logger: Logger;
  #warnedFull = false;
  readonly #inPlace = new InPlaceReads();

  private constructor(
    chunked: ChunkedDevice,
    dir: string,
    data: FileHandle,
    log: FileHandle,
    state: Uint8Array,
    options: UnpackedOptions,
  ) {
    this.#chunked = chunked;
    this.#index = chunked.index;
    this.size = chunked.size;
    this.dir = dir;
    this.#data = data;
    this.#log = log;
    this.#state = state;
    this.#space = options.space ?? null;
    this.#logger = options.logger ?? silentLogger;
    for (let i = 0; i < state.length; i++)
      if (state[i] === LOGGED) this.stats.cachedBytes += this.#index.chunks[i].size;
    this.#space?.hold(dir, this.stats.cachedBytes);
  }

  /** The folder of an image's unpacked copy under `root`. */
  static folder(root: string, identity: string): string {
    return cacheFolder(root, identity);
  }

  /** Keeps `chunked`'s bytes under `root` (DIR/unpacked of a cache folder). */
  static async open(
    chunked: ChunkedDevice,
    root: string,
    options: UnpackedOptions = {},
  ): Promise<UnpackedDevice> {
    const index = chunked.index;
    const identity = indexIdentity(index);
    const dir = UnpackedDevice.folder(root, identity);
    await claimCacheFolder(dir, `${identity}\nchunks ${index.chunks.length}\n`);
    const n = index.chunks.length;
    const state = new Uint8Array(n);
    for (let i = 0; i < n; i++) if (isZeroChunk(index.chunks[i])) state[i] = ZERO;
    const logPath = join(dir, "chunks");
    const log = await readFile(logPath).catch(() => Buffer.alloc(0));
    for (let at = 0; at + 4 <= log.length; at += 4) {
      const i = log.readUInt32LE(at);
      if (i < n && state[i] === ABSENT) state[i] = LOGGED;
    }
    // A torn last record (a kill mid-append) is dropped; its chunk is fetched again.
    if (log.length % 4) await truncate(logPath, log.length - (log.length % 4));
    const dataPath = join(dir, "data");
    await (await open(dataPath, "a")).close();
    const data = await open(dataPath, "r+");
    const logFh = await open(logPath, "a");
    return new UnpackedDevice(chunked, dir, data, logFh, state, options);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = Buffer.allocUnsafe(length);
    if (length > 0) await this.readInto(offset, out);
    return out;
  }

  /** Fills `into` with the bytes at `offset`: one pread when every chunk there is verified. */
  async readInto(offset: number, into: Buffer): Promise<void> {
    checkRange(this, offset, into.length);
    if (into.length === 0) return;
    const first = this.#chunked.chunkAt(offset);
    const last = this.#chunked.chunkAt(offset + into.length - 1);
    const zeros = this.#zerosIfReady(first, last);
    if (zeros < 0) return this.#slowRead(offset, into, first, last);
    if (this.#inPlace.allowed(into.length)) {
      this.#readReady(offset, into, first, last, zeros);
      return;
    }
    if (zeros < last - first + 1) {
      this.stats.fileReads++;
      await pread(this.#data.fd, into, offset);
    }
    this.#zeroFill(into, offset, first, last, zeros);
  }

  /**
   * The read at once when it is small and every chunk there is verified (the page cache holds
   * them while reads in place stay fast); false sends the caller to readInto.
   */
  readIntoNow(offset: number, into: Buffer): boolean {
    if (!this.#inPlace.allowed(into.length)) return false;
    checkRange(this, offset, into.length);
    const first = this.#chunked.chunkAt(offset);
    const last = this.#chunked.chunkAt(offset + into.length - 1);
    const zeros = this.#zerosIfReady(first, last);
    if (zeros < 0) return false;
    this.#readReady(offset, into, first, last, zeros);
    return true;
  }

  /** How many of chunks first..last are zero chunks when the rest are verified; else -1. */
  #zerosIfReady(first: number, last: number): number {
    let zeros = 0;
    for (let i = first; i <= last; i++) {
      const s = this.#state[i];
      if (s === ZERO) zeros++;
      else if (s !== VERIFIED) return -1;
    }
    return zeros;
  }

  #readReady(offset: number, into: Buffer, first: number, last: number, zeros: number): void {
    if (zeros < last - first + 1) {
      this.stats.fileReads++;
      // Beyond the file's end (chunks at the image's end never written) reads as zeros.
      const n = this.#inPlace.read(this.#data.fd, into, offset);
      if (n < into.length) into.fill(0, n);
    }
    this.#zeroFill(into, offset, first, last, zeros);
  }

  /** Zero chunks are never in the file: their part of a read is zeros. */
  #zeroFill(into: Buffer, offset: number, first: number, last: number, zeros: number): void {
    if (zeros === last - first + 1) into.fill(0);
    else if (zeros)
      this.#fill(into, offset, first, last, (i) => (this.#state[i] === ZERO ? null : undefined));
  }

  /** Some chunk of the range is not checked yet: check or fetch it, then read. */
  async #slowRead(offset: number, into: Buffer, first: number, last: number): Promise<void> {
    this.stats.slowReads++;
    const got = new Map<number, Promise<Buffer>>();
    let fromFile = false;
    for (let i = first; i <= last; i++) {
      const s = this.#state[i];
      if (s === VERIFIED) fromFile = true;
      else if (s === LOGGED) got.set(i, this.#check(i));
      else if (s === ABSENT || s === WRITING) got.set(i, this.#checking.get(i) ?? this.#fetch(i));
    }
    // The file is read only for the chunks it holds checked (a cold read needs none of it).
    const file = fromFile ? pread(this.#data.fd, into, offset) : Promise.resolve();
    const [, ...chunks] = await settleAll<Buffer | void>([file, ...got.values()]);
    const byChunk = new Map([...got.keys()].map((i, k) => [i, chunks[k] as Buffer]));
    // Zero chunks and the chunks just checked or fetched come from memory; verified ones
    // (unchanged since the check) stay as the pread gave them.
    this.#fill(into, offset, first, last, (i) =>
      this.#state[i] === ZERO ? null : (byChunk.get(i) ?? undefined),
    );
    if (this.#writes.size > MAX_PENDING_WRITES) await Promise.all(this.#writes);
  }

  /**
   * Overwrites the parts of `out` (the bytes at `offset`) of chunks first..last with what
   * `bytes(i)` gives: a buffer, null for zeros, undefined to leave them.
   */
  #fill(
    out: Buffer,
    offset: number,
    first: number,
    last: number,
    bytes: (i: number) => Buffer | null | undefined,
  ): void {
    for (let i = first; i <= last; i++) {
      const data = bytes(i);
      if (data === undefined) continue;
      const c = this.#index.chunks[i];
      const from = Math.max(offset, c.offset);
      const to = Math.min(offset + out.length, c.offset + c.size);
      if (data === null) out.fill(0, from - offset, to - offset);
      else data.copy(out, from - offset, from - c.offset, to - c.offset);
    }
  }

  /** A logged chunk's first read this run: its bytes from the file, checked against its ID. */
  #check(i: number): Promise<Buffer> {
    let p = this.#checking.get(i);
    if (p) return p;
    const c = this.#index.chunks[i];
    const bytes = Buffer.allocUnsafe(c.size);
    p = pread(this.#data.fd, bytes, c.offset).then(() => {
      this.stats.checked++;
      if (createHash("sha256").update(bytes).digest("hex") === c.id) {
        if (this.#state[i] === LOGGED) this.#state[i] = VERIFIED;
        return bytes;
      }
      if (this.#state[i] === LOGGED) {
        this.#logger.warn(
          { cache: this.dir, chunk: c.id, offset: c.offset },
          "an unpacked chunk in the cache does not match its ID; fetching it again",
        );
        this.stats.repaired++;
        this.stats.cachedBytes -= c.size;
        this.#state[i] = ABSENT;
      }
      return this.#fetch(i);
    });
    this.#checking.set(i, p);
    void p.then(
      () => this.#checking.delete(i),
      () => this.#checking.delete(i),
    );
    return p;
  }

  /** A chunk's verified bytes from below; kept in the file behind the read. */
  async #fetch(i: number): Promise<Buffer> {
    const data = await this.#chunked.chunkData(i);
    if (this.#state[i] === ABSENT) {
      this.#state[i] = WRITING;
      const job = this.#keep(i, data);
      this.#writes.add(job);
      void job.finally(() => this.#writes.delete(job));
    }
    return data;
  }

  async #keep(i: number, data: Buffer): Promise<void> {
    const c = this.#index.chunks[i];
    try {
      if (this.#space && !(await this.#space.reserve(this.dir, c.size))) {
        this.#state[i] = ABSENT;
        this.stats.unkeptBytes += c.size;
        if (!this.#warnedFull) {
          this.#warnedFull = true;
          this.#logger.warn(
            { cache: this.dir, quotaBytes: this.#space.quotaBytes },
            "the cache quota is full of data in use: chunks of this image are served but not kept unpacked; raise the quota (--cache-quota)",
          );
        }
        return;
      }
      let done = 0;
      while (done < c.size) {
        const { bytesWritten } = await this.#data.write(data, done, c.size - done, c.offset + done);
        done += bytesWritten;
      }
      // The log entry after the bytes: a logged chunk has them (or fails its check).
      const record = Buffer.alloc(4);
      record.writeUInt32LE(i);
      await this.#log.write(record);
      this.#state[i] = VERIFIED;
      this.stats.cachedBytes += c.size;
    } catch (err) {
      this.#state[i] = ABSENT;
      this.#logger.warn(
        { cache: this.dir, err: (err as Error).message },
        "cannot write to the unpacked cache",
      );
    }
  }

  /** Waits for the writes under way (the chunks they keep are then read from the file). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.#writes]);
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return this.#chunked.extents(offset, length);
  }

  write(): Promise<void> {
    return Promise.reject(
      new ReadOnlyError("A chunked image is read-only; attach it with --cow FILE to write"),
    );
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#writes, ...this.#checking.values()]);
    await this.#data.close();
    await this.#log.close();
    this.#space?.release(this.dir);
    await this.#chunked.close();
  }
}
