// How large each file read from a store can legitimately be. Every body is read against one of
// these bounds and refused as soon as it passes it (BodyTooLargeError), before any signature
// or digest check: a broken or hostile mirror cannot make a client hold more than this.

/** A release (.json), its .minisig, a `latest` pointer, a public key: small text, 1 MiB at most. */
export const MAX_RELEASE_FILE_BYTES = 1024 * 1024;

/**
 * releases/index.json lists every revision of every image: 16 MiB holds about two million
 * revisions, far beyond any store, while a client holds it once per listing.
 */
export const MAX_CATALOG_BYTES = 16 * 1024 * 1024;

/**
 * A boot profile (one "OFFSET LENGTH" line per region read at boot): 16 MiB is about 500,000
 * regions, over a hundred times what a boot touches.
 */
export const MAX_PROFILE_BYTES = 16 * 1024 * 1024;

/**
 * casync's own largest chunk (CA_CHUNK_SIZE_LIMIT_MAX in casync src/cachunker.h, 128 MiB): an
 * index that declares a larger maximum chunk size was not made by casync or inetboot.
 */
export const CASYNC_MAX_CHUNK_BYTES = 128 * 1024 * 1024;

/** Bytes of a .caibx before its chunk table: the index header (48) and the table header (16). */
const INDEX_FIXED_BYTES = 48 + 16;
/** Bytes per chunk table item (end offset + SHA-256) and of the table tail. */
const INDEX_ITEM_BYTES = 40;

/**
 * A bare index (no release naming its size) can be at most 256 MiB: 6.7 million chunks, which
 * at casync's default 64 KiB average is a 400 GiB image. An index named by a release is read
 * against its exact size (indexBytesFor the release's chunk count).
 */
export const MAX_INDEX_BYTES = 256 * 1024 * 1024;

/** The exact size of a .caibx of `chunks` chunks: header, table header, items and tail. */
export function indexBytesFor(chunks: number): number {
  return INDEX_FIXED_BYTES + INDEX_ITEM_BYTES * (chunks + 1);
}

/**
 * The largest zstd frame of `size` uncompressed bytes (ZSTD_COMPRESSBOUND in zstd.h: incompressible
 * data stored in raw blocks), plus 1 KiB for frame headers, checksums and skippable frames.
 */
export function maxFrameBytes(size: number): number {
  const small = 128 * 1024;
  return size + Math.floor(size / 256) + (size < small ? (small - size) >> 11 : 0) + 1024;
}

/** The bound for a read with no stated limit: the largest legitimate store file, an index. */
export const DEFAULT_MAX_READ_BYTES = MAX_INDEX_BYTES;
