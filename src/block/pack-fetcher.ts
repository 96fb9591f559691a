// Boot-pack download: fetches the chunks of a release's boot pack that the cache lacks with a
// few large Range requests over parallel connections, in access order, verifying and caching
// each chunk as its bytes stream in. Demand reads of a chunk whose part of the pack is already
// on its way wait for it; any other read (or a chunk the pack fails to deliver) goes to `next`.
// Pieces (format 2: parts of chunks, which no store holds on their own) are always waited for.
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { decodePackTable, packPath, packTableBytes } from "../store/boot-pack.ts";
import type { PackEntry, PackInfo } from "../store/boot-pack.ts";
import { verifyChunk } from "../store/chunks.ts";
import type { VerifiedChunk } from "../store/chunks.ts";
import type { StoreReader } from "../store/store.ts";
import type { BlobIndex } from "../store/caibx.ts";
import { chunkIndexAt } from "../store/caibx.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import type { ChunkCache } from "./chunk-cache.ts";
import type { ChunkFetcher, ChunkRef } from "./chunk-fetcher.ts";

export const DEFAULT_PACK_CONNECTIONS = 4;
/** Range requests are at least this large (fewer round trips)… */
export const MIN_PACK_PIECE = 1024 * 1024;
/** …and at most this large (early chunks are not stuck behind a long transfer). */
export const MAX_PACK_PIECE = 8 * 1024 * 1024;

export interface PackStats {
  chunks: number;
  /** Chunks the cache lacked when the download started. */
  wanted: number;
  delivered: number;
  /** Uncompressed bytes of the delivered chunks. */
  deliveredBytes: number;
  /** Bytes received from the origin (table included). */
  transferredBytes: number;
  requests: number;
  failed: number;
  finished: boolean;
  seconds: number | null;
  /** Why the pack could not be used at all (its table unreadable or wrong), else null. */
  error: string | null;
}

interface Slot {
  entry: PackEntry;
  started: boolean;
  /** Verified and handed to its waiters: never counted as failed afterwards. */
  delivered: boolean;
  promise: Promise<VerifiedChunk>;
  resolve: (v: VerifiedChunk) => void;
  reject: (e: Error) => void;
}

interface Piece {
  slots: Slot[];
  offset: number;
  length: number;
}

/** Whether a placed entry is a piece rather than the image's chunk at its place. */
export function isPiece(index: BlobIndex, entry: PackEntry): boolean {
  if (entry.at === null) return false;
  const chunk = index.chunks[chunkIndexAt(index, entry.at)];
  return chunk.offset !== entry.at || chunk.id !== entry.id || chunk.size !== entry.size;
}

export class PackFetcher implements ChunkFetcher {
  readonly stats: PackStats;
  readonly #next: ChunkFetcher;
  readonly #readers: StoreReader[];
  readonly #info: PackInfo;
  readonly #cache: ChunkCache | null;
  readonly #log: Logger;
  readonly #connections: number;
  readonly #slots = new Map<string, Slot>();
  readonly #index: BlobIndex | null;
  readonly #tableFile: string | null;
  /** Ids of the pack's pieces: parts of chunks, which no store has on their own. */
  readonly #pieces = new Set<string>();
  #closed = false;
  readonly done: Promise<void>;
  /** The table's entries once it is read and checked; none when the pack is unusable. */
  readonly entries: Promise<readonly PackEntry[]>;
  #tableRead!: (entries: readonly PackEntry[]) => void;

  constructor(
    next: ChunkFetcher,
    readers: StoreReader[],
    info: PackInfo,
    options: {
      cache?: ChunkCache | null;
      connections?: number;
      logger?: Logger;
      /** The image's index: entries are checked to lie in it, and pieces told from chunks. */
      index?: BlobIndex;
      /** Where to keep the checked table (for an offline open). */
      tableFile?: string;
    } = {},
  ) {
    this.#next = next;
    this.#readers = readers;
    this.#info = info;
    this.#cache = options.cache ?? null;
    this.#log = options.logger ?? silentLogger;
    this.#connections = options.connections ?? DEFAULT_PACK_CONNECTIONS;
    this.#index = options.index ?? null;
    this.#tableFile = options.tableFile ?? null;
    this.entries = new Promise((resolve) => (this.#tableRead = resolve));
    this.stats = {
      chunks: info.chunks,
      wanted: 0,
      delivered: 0,
      deliveredBytes: 0,
      transferredBytes: 0,
      requests: 0,
      failed: 0,
      finished: false,
      seconds: null,
      error: null,
    };
    this.done = this.#run().catch((err: Error) => {
      this.#log.warn({ err: err.message }, "boot pack unusable; reading chunks one by one");
      this.#failAll(err);
      this.stats.error = err.message;
      this.stats.failed = this.stats.chunks - this.stats.delivered;
      this.stats.finished = true;
      this.#tableRead([]);
    });
  }

  /** Reads `length` bytes at `offset` of the pack from the first store that answers. */
  async *#range(offset: number, length: number): AsyncIterable<Buffer> {
    let lastError: unknown;
    for (const reader of this.#readers) {
      let got = 0;
      try {
        this.stats.requests++;
        // Packs live at the store's root (packs/), beside its chunks/ folder.
        const path = packPath(this.#info.digest);
        for await (const part of reader.readRange(path, offset, length)) {
          got += part.length;
          this.stats.transferredBytes += part.length;
          yield part;
        }
        return;
      } catch (err) {
        lastError = err;
        if (got > 0) throw err; // part was consumed: the caller decides about the rest
      }
    }
    throw lastError instanceof Error ? lastError : new Error(String(lastError));
  }

  async #run(): Promise<void> {
    const started = performance.now();
    const tableLength = packTableBytes(this.#info);
    const chunksOfTable: Buffer[] = [];
    for await (const part of this.#range(0, tableLength)) chunksOfTable.push(part);
    const table = Buffer.concat(chunksOfTable);
    const entries = decodePackTable(
      table,
      this.#info,
      packPath(this.#info.digest),
      this.#index?.size,
    );
    for (const e of entries) if (this.#index && isPiece(this.#index, e)) this.#pieces.add(e.id);
    if (this.#tableFile) {
      await writeFileAtomic(this.#tableFile, table).catch((err: Error) =>
        this.#log.warn({ err: err.message }, "cannot keep the boot pack's table in the cache"),
      );
    }
    this.#tableRead(entries);
    // An entry at several places in the image is one download.
    const missing = [...new Map(entries.map((e) => [e.id, e])).values()].filter(
      (e) => !this.#cache?.has(e.id),
    );
    this.stats.wanted = missing.length;
    for (const entry of missing) {
      let resolve!: (v: VerifiedChunk) => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<VerifiedChunk>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => undefined); // a waiter, if any, sees the rejection
      this.#slots.set(entry.id, {
        entry,
        started: false,
        delivered: false,
        promise,
        resolve,
        reject,
      });
    }
    const pieces = this.#plan(missing.map((e) => this.#slots.get(e.id)!));
    let cursor = 0;
    const worker = async (): Promise<void> => {
      while (!this.#closed && cursor < pieces.length) await this.#download(pieces[cursor++]);
    };
    await Promise.all(Array.from({ length: this.#connections }, worker));
    this.#failAll(new Error("the boot pack download stopped"));
    this.stats.finished = true;
    this.stats.seconds = (performance.now() - started) / 1000;
    this.#log.info({ ...this.stats }, "boot pack downloaded");
  }

  /** Contiguous runs of missing entries, cut into pieces of MIN..MAX_PACK_PIECE bytes. */
  #plan(slots: Slot[]): Piece[] {
    const total = slots.reduce((n, s) => n + s.entry.length, 0);
    const target = Math.min(
      MAX_PACK_PIECE,
      Math.max(MIN_PACK_PIECE, Math.ceil(total / (this.#connections * 4))),
    );
    const pieces: Piece[] = [];
    for (const slot of slots) {
      const last = pieces.at(-1);
      const e = slot.entry;
      if (last && last.offset + last.length === e.offset && last.length + e.length <= target) {
        last.slots.push(slot);
        last.length += e.length;
      } else pieces.push({ slots: [slot], offset: e.offset, length: e.length });
    }
    return pieces;
  }

  async #download(piece: Piece): Promise<void> {
    for (const s of piece.slots) s.started = true;
    let buffered: Buffer[] = [];
    let have = 0;
    let at = 0; // next slot to complete
    const verifications: Promise<void>[] = [];
    try {
      for await (const part of this.#range(piece.offset, piece.length)) {
        buffered.push(part);
        have += part.length;
        while (at < piece.slots.length && have >= piece.slots[at].entry.length) {
          const slot = piece.slots[at++];
          const all = buffered.length === 1 ? buffered[0] : Buffer.concat(buffered);
          const frame = Buffer.from(all.subarray(0, slot.entry.length));
          const rest = all.subarray(slot.entry.length);
          buffered = rest.length > 0 ? [rest] : [];
          have = rest.length;
          verifications.push(this.#deliver(slot, frame));
        }
        if (this.#closed) break;
      }
    } catch (err) {
      this.#log.warn(
        { offset: piece.offset, length: piece.length, err: (err as Error).message },
        "boot pack range failed; its chunks are read one by one",
      );
    }
    for (const slot of piece.slots.slice(at))
      this.#fail(slot, new Error("not delivered by the boot pack"));
    await Promise.all(verifications);
  }

  async #deliver(slot: Slot, frame: Buffer): Promise<void> {
    const chunk = { id: slot.entry.id, size: slot.entry.size };
    try {
      const data = await verifyChunk(
        frame,
        chunk,
        `${packPath(this.#info.digest)}@${slot.entry.offset}`,
      );
      this.stats.delivered++;
      this.stats.deliveredBytes += data.length;
      slot.delivered = true;
      slot.resolve({ data, frame });
      await this.#cache?.put(chunk, data, frame);
      // From now on the cache has it (a waiter already holds the promise).
      if (this.#cache?.has(chunk.id)) this.#slots.delete(chunk.id);
    } catch (err) {
      this.#fail(slot, err as Error);
      this.#log.warn({ chunk: chunk.id, err: (err as Error).message }, "boot pack chunk rejected");
    }
  }

  #fail(slot: Slot, err: Error): void {
    if (this.#slots.get(slot.entry.id) !== slot) return;
    this.#slots.delete(slot.entry.id);
    // A delivered chunk with no cache to keep it is let go at the end, not failed.
    if (slot.delivered) return;
    this.stats.failed++;
    slot.reject(err);
  }

  #failAll(err: Error): void {
    for (const slot of [...this.#slots.values()]) this.#fail(slot, err);
  }

  async fetch(chunk: ChunkRef): Promise<Buffer> {
    return (await this.fetchWithFrame(chunk)).data;
  }

  async fetchWithFrame(chunk: ChunkRef): Promise<VerifiedChunk> {
    const slot = this.#slots.get(chunk.id);
    if (slot?.started || (slot && this.#pieces.has(chunk.id))) {
      try {
        return await slot.promise;
      } catch {
        // fall through to a chunk-by-chunk read
      }
    }
    return this.#next.fetchWithFrame
      ? this.#next.fetchWithFrame(chunk)
      : { data: await this.#next.fetch(chunk), frame: null };
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.done;
    await this.#next.close();
  }
}
