// A chunked image (a casync index over a chunk fetcher) as a read-only block device. Reads map
// to the chunks they cover; each chunk is fetched once even when many reads want it at once,
// and a small in-memory LRU keeps the hottest decompressed chunks.
import { chunkIndexAt } from "../store/caibx.ts";
import type { BlobIndex } from "../store/caibx.ts";
import { isZeroChunk } from "../store/chunks.ts";
import { BlockIoError, checkRange, mergeExtents, ReadOnlyError } from "./block-device.ts";
import type { BlockDevice, Extent } from "./block-device.ts";
import type { ChunkFetcher } from "./chunk-fetcher.ts";

/** Decompressed, verified chunks kept in memory per device (LRU, by bytes): 256 MiB. */
export const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;

export class ChunkedDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  readonly index: BlobIndex;
  readonly #fetcher: ChunkFetcher;
  readonly #zero: Uint8Array;
  readonly #memory = new Map<number, Buffer>();
  readonly #memoryBytes: number;
  #memoryUsed = 0;
  readonly #inFlight = new Map<number, Promise<Buffer>>();

  constructor(index: BlobIndex, fetcher: ChunkFetcher, options: { memoryBytes?: number } = {}) {
    this.index = index;
    this.size = index.size;
    this.#fetcher = fetcher;
    this.#memoryBytes = options.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    this.#zero = Uint8Array.from(index.chunks, (c) => (isZeroChunk(c) ? 1 : 0));
  }

  /** Position in the index of the chunk holding byte `offset`. */
  chunkAt(offset: number): number {
    return chunkIndexAt(this.index, offset);
  }

  /** Bytes of one chunk by position in the index: memory, an in-flight fetch, or the fetcher. */
  chunkData(i: number): Promise<Buffer> {
    const chunk = this.index.chunks[i];
    if (this.#zero[i]) return Promise.resolve(Buffer.alloc(chunk.size));
    const hot = this.#memory.get(i);
    if (hot) {
      this.#memory.delete(i);
      this.#memory.set(i, hot);
      return Promise.resolve(hot);
    }
    let pending = this.#inFlight.get(i);
    if (!pending) {
      pending = this.#fetcher.fetch(chunk).then(
        (data) => {
          this.#inFlight.delete(i);
          if (data.length <= this.#memoryBytes && !this.#memory.has(i)) {
            this.#memory.set(i, data);
            this.#memoryUsed += data.length;
            for (const [old, buf] of this.#memory) {
              if (this.#memoryUsed <= this.#memoryBytes) break;
              this.#memory.delete(old);
              this.#memoryUsed -= buf.length;
            }
          }
          return data;
        },
        (err: unknown) => {
          this.#inFlight.delete(i);
          throw new BlockIoError(
            `Cannot read chunk ${chunk.id} at offset ${chunk.offset}: ${(err as Error).message}`,
            { cause: err },
          );
        },
      );
      this.#inFlight.set(i, pending);
    }
    return pending;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = Buffer.alloc(length);
    if (length === 0) return out;
    const first = this.chunkAt(offset);
    const last = this.chunkAt(offset + length - 1);
    const jobs: Promise<void>[] = [];
    for (let i = first; i <= last; i++) {
      if (this.#zero[i]) continue; // already zeros
      const chunk = this.index.chunks[i];
      jobs.push(
        this.chunkData(i).then((data) => {
          const from = Math.max(offset, chunk.offset);
          const to = Math.min(offset + length, chunk.offset + chunk.size);
          data.copy(out, from - offset, from - chunk.offset, to - chunk.offset);
        }),
      );
    }
    await Promise.all(jobs);
    return out;
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    checkRange(this, offset, length);
    const out: Extent[] = [];
    if (length === 0) return Promise.resolve(out);
    const first = this.chunkAt(offset);
    const last = this.chunkAt(offset + length - 1);
    for (let i = first; i <= last; i++) {
      const c = this.index.chunks[i];
      const zero = this.#zero[i] === 1;
      out.push({ offset: c.offset, length: c.size, hole: zero, zero });
    }
    const merged = mergeExtents(out);
    merged[0].length -= offset - merged[0].offset;
    merged[0].offset = offset;
    return Promise.resolve(merged);
  }

  write(): Promise<void> {
    return Promise.reject(
      new ReadOnlyError("A chunked image is read-only; attach it with --cow FILE to write"),
    );
  }

  async close(): Promise<void> {
    await this.#fetcher.close();
  }
}
