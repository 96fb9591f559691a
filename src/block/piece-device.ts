// Boot-pack pieces over a chunked image: reads that fall on a piece (the bytes of a chunk the
// recorded boot read, from a format 2 boot pack) are served from the piece, so the boot never
// fetches the rest of that chunk; everything else passes to the image below. A piece that cannot
// be had (the pack failed, the cache lost it) is dropped and its bytes read from the image.
import type { BlobIndex } from "../store/caibx.ts";
import type { PackEntry } from "../store/boot-pack.ts";
import { isZeroChunk } from "../store/chunks.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { checkRange, readIntoFrom, settleAll } from "./block-device.ts";
import type { BlockDevice } from "./block-device.ts";
import type { ChunkFetcher } from "./chunk-fetcher.ts";
import { isPiece } from "./pack-fetcher.ts";
import { PassThroughDevice } from "./pass-through.ts";

/** Decoded pieces kept in memory (LRU, by bytes). */
const PIECE_MEMORY_BYTES = 16 * 1024 * 1024;
/**
 * How long reads wait for the pack's table at open. A slow or failing store must not stall a
 * boot behind it: after this, reads go to the image until the table arrives.
 */
export const TABLE_WAIT_MS = 3000;

interface Piece {
  id: string;
  offset: number;
  size: number;
  /** Could not be had: its bytes come from the image below from now on. */
  dropped: boolean;
}

export interface PieceStats {
  pieces: number;
  /** Reads (or parts of reads) served from pieces. */
  pieceReads: number;
  /** Pieces dropped because they could not be had. */
  dropped: number;
}

export class PieceDevice extends PassThroughDevice {
  readonly stats: PieceStats = { pieces: 0, pieceReads: 0, dropped: 0 };
  readonly #fetcher: ChunkFetcher;
  readonly #log: Logger;
  /** Pieces in image order, once the pack's table is known. */
  readonly #ready: Promise<Piece[]>;
  #pieces: Piece[] | null = null;
  /** Resolves with the pieces, or with none once TABLE_WAIT_MS have passed without them. */
  readonly #early: Promise<Piece[]>;
  readonly #memory = new Map<string, Buffer>();
  #memoryUsed = 0;
  readonly #inFlight = new Map<string, Promise<Buffer>>();

  /**
   * `entries`: the pack's table (placed entries; the image's own chunks among them pass
   * through). `fetcher`: where pieces come from (the cache over the pack download).
   */
  constructor(
    next: BlockDevice,
    index: BlobIndex,
    entries: Promise<readonly PackEntry[]>,
    fetcher: ChunkFetcher,
    options: { logger?: Logger; tableWaitMs?: number } = {},
  ) {
    super(next);
    this.#fetcher = fetcher;
    this.#log = options.logger ?? silentLogger;
    this.#ready = entries.then((all) => {
      const pieces = all
        .filter((e) => isPiece(index, e))
        .map((e) => ({ id: e.id, offset: e.at!, size: e.size, dropped: false }))
        .sort((a, b) => a.offset - b.offset);
      this.stats.pieces = pieces.length;
      this.#pieces = pieces;
      return pieces;
    });
    let timer: NodeJS.Timeout | undefined;
    this.#early = Promise.race([
      this.#ready,
      new Promise<Piece[]>((resolve) => {
        timer = setTimeout(() => {
          if (!this.#pieces)
            this.#log.warn("boot pack table is late; reading whole chunks meanwhile");
          resolve([]);
        }, options.tableWaitMs ?? TABLE_WAIT_MS);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /** The pieces' ids (to keep them in the cache), once the table is known. */
  async pieceIds(): Promise<string[]> {
    return (await this.#ready).map((p) => p.id);
  }

  override async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    await this.readInto(offset, out);
    return out;
  }

  async readInto(offset: number, into: Buffer): Promise<void> {
    checkRange(this, offset, into.length);
    const pieces = this.#pieces ?? (await this.#early);
    const end = offset + into.length;
    const jobs: Promise<void>[] = [];
    let at = offset;
    // The first piece that ends after `offset` (binary search).
    let lo = 0;
    let hi = pieces.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (pieces[mid].offset + pieces[mid].size <= offset) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; at < end; i++) {
      const piece = i < pieces.length && pieces[i].offset < end ? pieces[i] : null;
      const gapEnd = piece ? Math.max(at, piece.offset) : end;
      if (gapEnd > at) jobs.push(this.#fromNext(at, into.subarray(at - offset, gapEnd - offset)));
      if (!piece) break;
      const to = Math.min(end, piece.offset + piece.size);
      const from = Math.max(at, piece.offset);
      jobs.push(this.#fromPiece(piece, from, into.subarray(from - offset, to - offset)));
      at = to;
    }
    await settleAll(jobs);
  }

  /**
   * Pieces are bytes of the same image, named by their hashes: where the device below holds the
   * range verified, its bytes are the pieces' bytes. So a read at once is the one below.
   */
  readIntoNow(offset: number, into: Buffer): boolean {
    return this.next.readIntoNow?.(offset, into) ?? false;
  }

  #fromNext(offset: number, into: Buffer): Promise<void> {
    return readIntoFrom(this.next, offset, into);
  }

  async #fromPiece(piece: Piece, offset: number, into: Buffer): Promise<void> {
    if (!piece.dropped) {
      try {
        const data = await this.#data(piece);
        data.copy(into, 0, offset - piece.offset, offset - piece.offset + into.length);
        this.stats.pieceReads++;
        return;
      } catch (err) {
        if (!piece.dropped) {
          piece.dropped = true;
          this.stats.dropped++;
          this.#log.warn(
            { piece: piece.id, offset: piece.offset, err: (err as Error).message },
            "boot pack piece unavailable; its bytes come from the image's chunk",
          );
        }
      }
    }
    await this.#fromNext(offset, into);
  }

  /** A piece's verified bytes: memory, a fetch on its way, or the fetcher. */
  #data(piece: Piece): Promise<Buffer> {
    const ref = { id: piece.id, size: piece.size };
    if (isZeroChunk(ref)) return Promise.resolve(Buffer.alloc(piece.size));
    const hot = this.#memory.get(piece.id);
    if (hot) {
      this.#memory.delete(piece.id);
      this.#memory.set(piece.id, hot);
      return Promise.resolve(hot);
    }
    let pending = this.#inFlight.get(piece.id);
    if (!pending) {
      pending = this.#fetcher.fetch(ref).finally(() => this.#inFlight.delete(piece.id));
      void pending.then(
        (data) => this.#remember(piece.id, data),
        () => undefined,
      );
      this.#inFlight.set(piece.id, pending);
    }
    return pending;
  }

  #remember(id: string, data: Buffer): void {
    if (this.#memory.has(id)) return;
    this.#memory.set(id, data);
    this.#memoryUsed += data.length;
    for (const [old, buf] of this.#memory) {
      if (this.#memoryUsed <= PIECE_MEMORY_BYTES) break;
      this.#memory.delete(old);
      this.#memoryUsed -= buf.length;
    }
  }
}
