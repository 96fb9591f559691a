// casync blob index (.caibx) codec: pure bytes <-> values, no I/O.
// Layout (casync src/caformat.h): CaFormatIndex (48 bytes), then a CaFormatTable header whose
// size is UINT64_MAX, one 40-byte item per chunk (little-endian END offset + 32-byte chunk id),
// then a 40-byte tail (two zero words, index offset 48, table size, tail marker).
import type { ChunkerParams } from "./chunker.ts";
import { CASYNC_MAX_CHUNK_BYTES } from "./limits.ts";

export const CA_FORMAT_INDEX = 0x96824d9c7b129ff9n;
export const CA_FORMAT_TABLE = 0xe75b9e112f17417dn;
export const CA_FORMAT_TABLE_TAIL_MARKER = 0x4b4f050e5549ecd1n;
/** Set when chunk ids are SHA-512/256; absent means SHA-256, which is what we use. */
export const CA_FORMAT_SHA512_256 = 0x2000000000000000n;
/** The flags `casync make --digest=sha256` writes for a blob (EXCLUDE_NODUMP | EXCLUDE_FILE). */
export const CAIBX_DEFAULT_FLAGS = 0x9000000000000000n;

const INDEX_HEADER_SIZE = 48;
const TABLE_HEADER_SIZE = 16;
const ITEM_SIZE = 40;
const UINT64_MAX = 0xffffffffffffffffn;

export interface IndexChunk {
  /** Offset of the chunk's first byte in the image. */
  offset: number;
  /** Uncompressed length in bytes. */
  size: number;
  /** Lower-case hex SHA-256 of the uncompressed bytes. */
  id: string;
}

export interface BlobIndex {
  flags: bigint;
  chunker: ChunkerParams;
  chunks: IndexChunk[];
  /** Total image size: the end of the last chunk. */
  size: number;
}

export class IndexFormatError extends Error {
  readonly code = "ERR_INDEX_FORMAT";
}

export function encodeBlobIndex(index: Omit<BlobIndex, "size">): Buffer {
  const n = index.chunks.length;
  const out = Buffer.alloc(INDEX_HEADER_SIZE + TABLE_HEADER_SIZE + ITEM_SIZE * (n + 1));
  out.writeBigUInt64LE(BigInt(INDEX_HEADER_SIZE), 0);
  out.writeBigUInt64LE(CA_FORMAT_INDEX, 8);
  out.writeBigUInt64LE(index.flags, 16);
  out.writeBigUInt64LE(BigInt(index.chunker.min), 24);
  out.writeBigUInt64LE(BigInt(index.chunker.avg), 32);
  out.writeBigUInt64LE(BigInt(index.chunker.max), 40);
  out.writeBigUInt64LE(UINT64_MAX, 48);
  out.writeBigUInt64LE(CA_FORMAT_TABLE, 56);
  let pos = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE;
  let end = 0;
  for (const chunk of index.chunks) {
    if (chunk.offset !== end) {
      throw new IndexFormatError(
        `Cannot encode index: chunk at offset ${chunk.offset} does not follow the previous end ${end}`,
      );
    }
    end = chunk.offset + chunk.size;
    out.writeBigUInt64LE(BigInt(end), pos);
    if (out.write(chunk.id, pos + 8, 32, "hex") !== 32) {
      throw new IndexFormatError(`Cannot encode index: "${chunk.id}" is not a 64-digit hex id`);
    }
    pos += ITEM_SIZE;
  }
  // Tail: two zero words, then the index offset, the table size and the marker.
  out.writeBigUInt64LE(BigInt(INDEX_HEADER_SIZE), pos + 16);
  out.writeBigUInt64LE(BigInt(TABLE_HEADER_SIZE + ITEM_SIZE * (n + 1)), pos + 24);
  out.writeBigUInt64LE(CA_FORMAT_TABLE_TAIL_MARKER, pos + 32);
  return out;
}

/** Decodes a .caibx file; `name` is used in error messages (a path or URL). */
export function decodeBlobIndex(bytes: Uint8Array, name = "index"): BlobIndex {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (what: string): never => {
    throw new IndexFormatError(`Cannot decode ${name}: ${what}`);
  };
  const minimum = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE + ITEM_SIZE;
  if (buf.length < minimum) {
    fail(`file is ${buf.length} bytes, expected at least ${minimum} (truncated or not a .caibx)`);
  }
  if (
    buf.readBigUInt64LE(0) !== BigInt(INDEX_HEADER_SIZE) ||
    buf.readBigUInt64LE(8) !== CA_FORMAT_INDEX
  ) {
    fail("missing the casync index header (not a .caibx file)");
  }
  const flags = buf.readBigUInt64LE(16);
  if ((flags & CA_FORMAT_SHA512_256) !== 0n) {
    fail(
      "chunk ids are SHA-512/256; only SHA-256 indexes are supported (casync make --digest=sha256)",
    );
  }
  const chunker = {
    min: Number(buf.readBigUInt64LE(24)),
    avg: Number(buf.readBigUInt64LE(32)),
    max: Number(buf.readBigUInt64LE(40)),
  };
  // Every chunk is decompressed and hashed whole in memory: its size is bounded by the index's
  // maximum, and that by casync's own limit, so no index can ask for a multi-GiB buffer.
  if (!(chunker.max >= 1 && chunker.max <= CASYNC_MAX_CHUNK_BYTES)) {
    fail(
      `maximum chunk size is ${buf.readBigUInt64LE(40)}, expected 1 to ${CASYNC_MAX_CHUNK_BYTES} (casync's limit)`,
    );
  }
  if (buf.readBigUInt64LE(48) !== UINT64_MAX || buf.readBigUInt64LE(56) !== CA_FORMAT_TABLE) {
    fail("missing the chunk table header");
  }
  const tableBytes = buf.length - INDEX_HEADER_SIZE - TABLE_HEADER_SIZE;
  if (tableBytes % ITEM_SIZE !== 0) {
    fail(`chunk table is ${tableBytes} bytes, expected a multiple of ${ITEM_SIZE} (truncated)`);
  }
  const n = tableBytes / ITEM_SIZE - 1;
  const tail = buf.length - ITEM_SIZE;
  if (
    buf.readBigUInt64LE(tail + 32) !== CA_FORMAT_TABLE_TAIL_MARKER ||
    buf.readBigUInt64LE(tail + 16) !== BigInt(INDEX_HEADER_SIZE) ||
    buf.readBigUInt64LE(tail + 24) !== BigInt(TABLE_HEADER_SIZE + ITEM_SIZE * (n + 1))
  ) {
    fail("the table tail is missing or inconsistent (truncated or corrupt)");
  }
  const chunks: IndexChunk[] = new Array<IndexChunk>(n);
  let offset = 0;
  let pos = INDEX_HEADER_SIZE + TABLE_HEADER_SIZE;
  for (let i = 0; i < n; i++, pos += ITEM_SIZE) {
    const end = Number(buf.readBigUInt64LE(pos));
    if (!Number.isSafeInteger(end) || end <= offset) {
      fail(`chunk ${i} ends at ${end}, expected an offset past ${offset}`);
    }
    if (end - offset > chunker.max) {
      fail(
        `chunk ${i} is ${end - offset} bytes, larger than the index's maximum chunk size ${chunker.max}`,
      );
    }
    chunks[i] = { offset, size: end - offset, id: buf.toString("hex", pos + 8, pos + 40) };
    offset = end;
  }
  return { flags, chunker, chunks, size: offset };
}

/** Position in `index.chunks` of the chunk holding byte `offset` (binary search). */
export function chunkIndexAt(index: Pick<BlobIndex, "chunks">, offset: number): number {
  const chunks = index.chunks;
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (chunks[mid].offset <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The chunks a byte range touches; the range is clipped to the image. */
export function chunksInRange(index: BlobIndex, offset: number, length: number): IndexChunk[] {
  const end = Math.min(offset + length, index.size);
  if (offset < 0 || end <= offset) return [];
  return index.chunks.slice(chunkIndexAt(index, offset), chunkIndexAt(index, end - 1) + 1);
}
