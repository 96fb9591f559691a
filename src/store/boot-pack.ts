// Boot packs: the chunks a boot profile touches, exactly as stored (zstd frames), concatenated in
// first-access order behind a table, so a client fetches a whole boot set with a few large range
// requests instead of one request per chunk (the successor of DLAHEAD and ext2optimizer).
//
//   header  16 bytes   "IBPACK\0\1" | u32 LE count | u32 LE 0
//   table   48 bytes × count: chunk id (32 bytes) | u64 LE data offset | u32 LE frame length |
//                            u32 LE chunk size
//   data    the frames, back to back, in table order
//
// The release names the pack by the SHA-256 of the whole file and signs the SHA-256 of header +
// table, so a client checks the table before it trusts an offset; every chunk is then checked
// against its own name like any other.
import { CASYNC_MAX_CHUNK_BYTES, maxFrameBytes } from "./limits.ts";
import type { IndexChunk } from "./caibx.ts";
import { sha256Hex } from "./chunks.ts";
import { ReleaseError } from "./errors.ts";

export const PACK_MAGIC = Buffer.from("IBPACK\0\x01", "latin1");
const HEADER = 16;
const ENTRY = 48;

/** What a release says about its boot pack. */
export interface PackInfo {
  /** SHA-256 of the pack file: its name, packs/<digest>.pack. */
  digest: string;
  /** SHA-256 of header + table (the first tableBytes(chunks) bytes). */
  table: string;
  /** Size of the pack file in bytes. */
  size: number;
  chunks: number;
}

export interface PackEntry {
  id: string;
  /** Offset of the frame in the pack file (table included). */
  offset: number;
  /** Frame length (compressed). */
  length: number;
  /** Chunk size (uncompressed). */
  size: number;
}

export function packPath(digest: string): string {
  return `packs/${digest}.pack`;
}

export function profilePath(digest: string): string {
  return `profiles/${digest}.profile`;
}

/** Bytes of header + table for `count` chunks. */
export function tableBytes(count: number): number {
  return HEADER + ENTRY * count;
}

/** Lays `frames` (in order) out as a pack; returns the file and what a release records. */
export function encodePack(frames: { chunk: IndexChunk; frame: Buffer }[]): {
  bytes: Buffer;
  info: PackInfo;
  entries: PackEntry[];
} {
  const head = Buffer.alloc(tableBytes(frames.length));
  PACK_MAGIC.copy(head, 0);
  head.writeUInt32LE(frames.length, 8);
  let offset = head.length;
  const entries: PackEntry[] = frames.map(({ chunk, frame }, i) => {
    const at = HEADER + ENTRY * i;
    Buffer.from(chunk.id, "hex").copy(head, at);
    head.writeBigUInt64LE(BigInt(offset), at + 32);
    head.writeUInt32LE(frame.length, at + 40);
    head.writeUInt32LE(chunk.size, at + 44);
    const e = { id: chunk.id, offset, length: frame.length, size: chunk.size };
    offset += frame.length;
    return e;
  });
  const bytes = Buffer.concat([head, ...frames.map((f) => f.frame)]);
  return {
    bytes,
    entries,
    info: {
      digest: sha256Hex(bytes),
      table: sha256Hex(head),
      size: bytes.length,
      chunks: frames.length,
    },
  };
}

/** Checks header + table against the release's PackInfo and reads its entries. */
export function decodePackTable(bytes: Uint8Array, info: PackInfo, where: string): PackEntry[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (what: string): never => {
    throw new ReleaseError(`Boot pack ${where}: ${what}`);
  };
  if (b.length !== tableBytes(info.chunks))
    fail(`table is ${b.length} bytes, expected ${tableBytes(info.chunks)}`);
  if (sha256Hex(b) !== info.table) fail("its table does not match the digest the release signs");
  if (!b.subarray(0, 8).equals(PACK_MAGIC)) fail("not a boot pack (bad magic)");
  if (b.readUInt32LE(8) !== info.chunks)
    fail(`holds ${b.readUInt32LE(8)} chunks, the release says ${info.chunks}`);
  const out: PackEntry[] = [];
  let expected = b.length;
  for (let i = 0; i < info.chunks; i++) {
    const at = HEADER + ENTRY * i;
    const offset = Number(b.readBigUInt64LE(at + 32));
    const length = b.readUInt32LE(at + 40);
    if (offset !== expected || offset + length > info.size) fail(`entry ${i} is out of place`);
    const size = b.readUInt32LE(at + 44);
    // Each frame is read and decompressed whole: bounded like a chunk from chunks/.
    if (size > CASYNC_MAX_CHUNK_BYTES || length > maxFrameBytes(size)) {
      fail(`entry ${i} is a ${length}-byte frame for a ${size}-byte chunk, more than it can be`);
    }
    expected = offset + length;
    out.push({ id: b.toString("hex", at, at + 32), offset, length, size });
  }
  if (expected !== info.size) fail(`frames end at ${expected}, the pack is ${info.size} bytes`);
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
    (p.size as number) < tableBytes(p.chunks as number)
  ) {
    return "pack must be null or { digest, table, size, chunks }";
  }
  return { digest: p.digest, table: p.table, size: p.size as number, chunks: p.chunks as number };
}
