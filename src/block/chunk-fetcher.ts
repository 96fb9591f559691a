// Chunk-level sources under a chunked image: a store, a mirror set, a disk cache. Each returns
// only verified bytes, or throws; a layer wraps a `next` fetcher like block layers do.
import type { IndexChunk } from "../store/caibx.ts";
import { loadChunkWithFrame } from "../store/chunks.ts";
import type { ChunkSource, VerifiedChunk } from "../store/chunks.ts";

export type ChunkRef = Pick<IndexChunk, "id" | "size">;

export interface ChunkFetcher {
  /** The chunk's uncompressed, verified bytes. */
  fetch(chunk: ChunkRef): Promise<Buffer>;
  /** The same, with the zstd frame it arrived in, so a cache can store it without recompressing. */
  fetchWithFrame?(chunk: ChunkRef): Promise<VerifiedChunk>;
  /** Whether fetch() would be served locally without the network (caches say yes). */
  has?(chunk: ChunkRef): boolean;
  close(): Promise<void>;
}

/** Reads chunks from one store (local or HTTP), verifying each. */
export class StoreChunkFetcher implements ChunkFetcher {
  readonly source: ChunkSource;
  fetched = 0;
  fetchedBytes = 0;

  constructor(source: ChunkSource) {
    this.source = source;
  }

  async fetch(chunk: ChunkRef): Promise<Buffer> {
    return (await this.fetchWithFrame(chunk)).data;
  }

  async fetchWithFrame(chunk: ChunkRef): Promise<VerifiedChunk> {
    const got = await loadChunkWithFrame(this.source, chunk);
    this.fetched++;
    this.fetchedBytes += got.data.length;
    return got;
  }

  async close(): Promise<void> {
    await this.source.reader.close();
  }
}
