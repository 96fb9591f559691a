// Boot packs: the chunks a boot profile touches, exactly as stored (zstd frames), concatenated in
// first-access order behind a table, so a client fetches a whole boot set with a few large range
// requests instead of one request per chunk (the successor of DLAHEAD and ext2optimizer).
//
//   header  16 bytes   "IBPACK\0" | u8 format (1 or 2) | u32 LE count | u32 LE 0
//   table   format 1: 48 bytes × count: chunk id (32 bytes) | u64 LE data offset |
//                     u32 LE frame length | u32 LE chunk size
//           format 2: 56 bytes × count: the same, then u64 LE offset in the image
//   data    the frames, back to back, in table order
//
// Format 2 places each entry in the image. An entry is either one of the image's chunks or a
// piece: the bytes of a range inside a chunk that the boot read, named by their own SHA-256 like
// any chunk, so the boot set is fetched without the parts of its chunks it never reads.
//
// The release names the pack by the SHA-256 of the whole file and signs the SHA-256 of header +
// table, so a client checks the table before it trusts an offset; every entry is then checked
// against its own name like any other chunk.
import { CASYNC_MAX_CHUNK_BYTES, maxFrameBytes } from "./limits.ts";
import { sha256Hex } from "./chunks.ts";
import { ReleaseError } from "./errors.ts";

const MAGIC = Buffer.from("IBPACK\0", "latin1");
const HEADER = 16;
const ENTRY = { 1: 48, 2: 56 } as const;

export type PackFormat = 1 | 2;

/** Pieces are cut on this grain (and at chunk ends): the size of the reads boots make. */
export const PIECE_ALIGN = 4096;

/** Entries of a format 2 pack at most: a table of 56 MiB, a boot set of 4 GiB in pieces. */
export const MAX_PLACED_ENTRIES = 1 << 20;

/**
 * Most entries a pack of an image of `chunks` chunks and `size` bytes can hold: its table is
 * read whole, so it is bounded by the image (pieces lie on the 4 KiB grain or end at a chunk
 * end), and a format 2 table also by MAX_PLACED_ENTRIES.
 */
export function maxPackEntries(format: PackFormat, chunks: number, size: number): number {
  if (format === 1) return chunks;
  return Math.min(MAX_PLACED_ENTRIES, 2 * chunks + Math.ceil(size / PIECE_ALIGN));
}

/** What a release says about its boot pack. */
export interface PackInfo {
  /** SHA-256 of the pack file: its name, packs/<digest>.pack. */
  digest: string;
  /** SHA-256 of header + table (the first tableBytes(chunks) bytes). */
  table: string;
  /** Size of the pack file in bytes. */
  size: number;
  /** Entries in the table (chunks and pieces). */
  chunks: number;
  /** 2 when entries are placed in the image (pieces); absent in format 1. */
  format?: 2;
}

export interface PackEntry {
  id: string;
  /** Offset of the frame in the pack file (table included). */
  offset: number;
  /** Frame length (compressed). */
  length: number;
  /** Chunk size (uncompressed). */
  size: number;
  /** Where the bytes lie in the image (format 2), else null. */
  at: number | null;
}

export function packPath(digest: string): string {
  return `packs/${digest}.pack`;
}

export function profilePath(digest: string): string {
  return `profiles/${digest}.profile`;
}

/** Bytes of header + table for `count` entries. */
export function tableBytes(count: number, format: PackFormat = 1): number {
  return HEADER + ENTRY[format] * count;
}

/** Bytes of header + table of the pack a release describes. */
export function packTableBytes(info: PackInfo): number {
  return tableBytes(info.chunks, info.format ?? 1);
}

/**
 * Lays `frames` (in order) out as a pack; returns the file and what a release records. With
 * `format` 2, each chunk's offset is its place in the image.
 */
export function encodePack(
  frames: { chunk: { id: string; size: number; offset: number }; frame: Buffer }[],
  format: PackFormat = 1,
): { bytes: Buffer; info: PackInfo; entries: PackEntry[] } {
  const head = Buffer.alloc(tableBytes(frames.length, format));
  MAGIC.copy(head, 0);
  head[7] = format;
  head.writeUInt32LE(frames.length, 8);
  let offset = head.length;
  const entries: PackEntry[] = frames.map(({ chunk, frame }, i) => {
    const at = HEADER + ENTRY[format] * i;
    Buffer.from(chunk.id, "hex").copy(head, at);
    head.writeBigUInt64LE(BigInt(offset), at + 32);
    head.writeUInt32LE(frame.length, at + 40);
    head.writeUInt32LE(chunk.size, at + 44);
    if (format === 2) head.writeBigUInt64LE(BigInt(chunk.offset), at + 48);
    const e = {
      id: chunk.id,
      offset,
      length: frame.length,
      size: chunk.size,
      at: format === 2 ? chunk.offset : null,
    };
    offset += frame.length;
    return e;
  });
  const bytes = Buffer.concat([head, ...frames.map((f) => f.frame)]);
  const info: PackInfo = {
    digest: sha256Hex(bytes),
    table: sha256Hex(head),
    size: bytes.length,
    chunks: frames.length,
  };
  if (format === 2) info.format = 2;
  return { bytes, entries, info };
}

/**
 * Checks header + table against the release's PackInfo and reads its entries. Format 2 entries
 * must lie inside the image (`imageSize`) without overlapping one another.
 */
export function decodePackTable(
  bytes: Uint8Array,
  info: PackInfo,
  where: string,
  imageSize = Number.MAX_SAFE_INTEGER,
): PackEntry[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (what: string): never => {
    throw new ReleaseError(`Boot pack ${where}: ${what}`);
  };
  const format = info.format ?? 1;
  if (b.length !== tableBytes(info.chunks, format))
    fail(`table is ${b.length} bytes, expected ${tableBytes(info.chunks, format)}`);
  if (sha256Hex(b) !== info.table) fail("its table does not match the digest the release signs");
  if (!b.subarray(0, 7).equals(MAGIC) || b[7] !== format)
    fail(`not a boot pack of format ${format} (bad magic)`);
  if (b.readUInt32LE(8) !== info.chunks)
    fail(`holds ${b.readUInt32LE(8)} chunks, the release says ${info.chunks}`);
  const out: PackEntry[] = [];
  let expected = b.length;
  for (let i = 0; i < info.chunks; i++) {
    const at = HEADER + ENTRY[format] * i;
    const offset = Number(b.readBigUInt64LE(at + 32));
    const length = b.readUInt32LE(at + 40);
    if (offset !== expected || offset + length > info.size) fail(`entry ${i} is out of place`);
    const size = b.readUInt32LE(at + 44);
    // Each frame is read and decompressed whole: bounded like a chunk from chunks/.
    if (size > CASYNC_MAX_CHUNK_BYTES || length > maxFrameBytes(size)) {
      fail(`entry ${i} is a ${length}-byte frame for a ${size}-byte chunk, more than it can be`);
    }
    const place = format === 2 ? b.readBigUInt64LE(at + 48) : null;
    if (place !== null && (size === 0 || place + BigInt(size) > BigInt(imageSize)))
      fail(`entry ${i} (${size} bytes at ${place}) is not inside the image (${imageSize} bytes)`);
    expected = offset + length;
    const id = b.toString("hex", at, at + 32);
    out.push({ id, offset, length, size, at: place === null ? null : Number(place) });
  }
  if (expected !== info.size) fail(`frames end at ${expected}, the pack is ${info.size} bytes`);
  if (format === 2) {
    const placed = [...out].sort((x, y) => x.at! - y.at!);
    for (let i = 1; i < placed.length; i++) {
      if (placed[i - 1].at! + placed[i - 1].size > placed[i].at!)
        fail(`entries at ${placed[i - 1].at} and ${placed[i].at} overlap in the image`);
    }
  }
  return out;
}

/** Validates a release's `pack` value (null when absent). */
export function checkPackInfo(value: unknown): PackInfo | null | string {
  if (value === undefined || value === null) return null;
  const p = value as Record<string, unknown>;
  const hex = /^[0-9a-f]{64}$/;
  if (
    typeof p !== "object" ||
    typeof p.digest !== "string" ||
    !hex.test(p.digest) ||
    typeof p.table !== "string" ||
    !hex.test(p.table) ||
    !Number.isSafeInteger(p.size) ||
    !Number.isSafeInteger(p.chunks) ||
    (p.chunks as number) < 0 ||
    (p.format !== undefined && p.format !== 2) ||
    (p.size as number) < tableBytes(p.chunks as number, p.format === 2 ? 2 : 1)
  ) {
    return "pack must be null or { digest, table, size, chunks, format? (2) }";
  }
  const info: PackInfo = {
    digest: p.digest,
    table: p.table,
    size: p.size as number,
    chunks: p.chunks as number,
  };
  if (p.format === 2) info.format = 2;
  return info;
}
