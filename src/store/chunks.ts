// Reading chunks: fetch, decompress with a bound, verify the SHA-256 before a byte is used.
import { hash } from "node:crypto";
import { promisify } from "node:util";
import { zstdDecompress } from "node:zlib";
import type { IndexChunk } from "./caibx.ts";
import { ChunkCorruptError, ChunkMissingError, NotFoundError } from "./errors.ts";
import { chunkFile } from "./layout.ts";
import { CASYNC_MAX_CHUNK_BYTES, maxFrameBytes } from "./limits.ts";
import type { StoreReader } from "./store.ts";

const decompress = promisify(zstdDecompress);

/** Where chunks are read from: a store reader and the folder of its chunk store. */
export interface ChunkSource {
  reader: StoreReader;
  /** "chunks/" for an inetboot store; "" when the reader's root is itself a casync chunk store. */
  prefix: string;
}

export function chunkLocation(source: ChunkSource, id: string): string {
  return `${source.prefix}${chunkFile(id)}`;
}

const zeroIds = new Map<number, string>();

/** The id of an all-zero chunk of `size` bytes (cached: images have few distinct ones). */
export function zeroChunkId(size: number): string {
  let id = zeroIds.get(size);
  if (id === undefined) {
    id = hash("sha256", Buffer.alloc(size), "hex");
    zeroIds.set(size, id);
  }
  return id;
}

/** All-zero chunks are recognised by id and never fetched. */
export function isZeroChunk(chunk: Pick<IndexChunk, "id" | "size">): boolean {
  return zeroChunkId(chunk.size) === chunk.id;
}

export function sha256Hex(data: Uint8Array): string {
  return hash("sha256", data, "hex");
}

/**
 * Returns the uncompressed, verified bytes of `chunk`. Throws ChunkMissingError when the store
 * lacks it and ChunkCorruptError when its bytes are not what its name promises.
 */
export async function loadChunk(
  source: ChunkSource,
  chunk: Pick<IndexChunk, "id" | "size">,
): Promise<Buffer> {
  return (await loadChunkWithFrame(source, chunk)).data;
}

/** A verified chunk and the zstd frame it came in (what a cache can keep as it is). */
export interface VerifiedChunk {
  data: Buffer;
  /** The compressed bytes as stored; null for zero chunks, which are never fetched. */
  frame: Buffer | null;
}

export async function loadChunkWithFrame(
  source: ChunkSource,
  chunk: Pick<IndexChunk, "id" | "size">,
): Promise<VerifiedChunk> {
  const path = chunkLocation(source, chunk.id);
  checkChunkSize(chunk, source.reader.describe(path));
  if (isZeroChunk(chunk)) return { data: Buffer.alloc(chunk.size), frame: null };
  let compressed: Buffer;
  try {
    // A frame of `size` bytes is never larger than zstd's compress bound of it.
    compressed = await source.reader.read(path, {
      maxBytes: maxFrameBytes(chunk.size),
      what: "chunk",
    });
  } catch (err) {
    if (err instanceof NotFoundError)
      throw new ChunkMissingError(chunk.id, source.reader.describe(path));
    throw err;
  }
  return {
    data: await verifyChunk(compressed, chunk, source.reader.describe(path)),
    frame: compressed,
  };
}

/** Refuses a chunk larger than casync allows before a buffer of its size is made. */
function checkChunkSize(chunk: Pick<IndexChunk, "id" | "size">, where: string): void {
  if (!(Number.isSafeInteger(chunk.size) && chunk.size <= CASYNC_MAX_CHUNK_BYTES)) {
    throw new ChunkCorruptError(
      chunk.id,
      where,
      `its index says ${chunk.size} bytes, over the ${CASYNC_MAX_CHUNK_BYTES}-byte chunk limit`,
    );
  }
}

/** Decompresses (never past the expected size) and checks length and SHA-256. */
export async function verifyChunk(
  compressed: Uint8Array,
  chunk: Pick<IndexChunk, "id" | "size">,
  where: string,
): Promise<Buffer> {
  // Bounded before anything is allocated: no chunk is larger than casync allows, no frame larger
  // than zstd's compress bound of its chunk, and decompression stops one byte past the size.
  checkChunkSize(chunk, where);
  if (compressed.length > maxFrameBytes(chunk.size)) {
    throw new ChunkCorruptError(
      chunk.id,
      where,
      `a ${compressed.length}-byte frame cannot hold ${chunk.size} bytes`,
    );
  }
  let data: Buffer;
  try {
    data = await decompress(compressed, { maxOutputLength: chunk.size + 1 });
  } catch (err) {
    const why = err instanceof RangeError ? "larger than the index says" : "not a valid zstd frame";
    throw new ChunkCorruptError(chunk.id, where, why);
  }
  if (data.length !== chunk.size) {
    throw new ChunkCorruptError(chunk.id, where, `${data.length} bytes, expected ${chunk.size}`);
  }
  if (sha256Hex(data) !== chunk.id) {
    throw new ChunkCorruptError(chunk.id, where, "its SHA-256 does not match its name");
  }
  return data;
}
