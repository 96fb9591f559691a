// `inetboot optimize`: publishes a boot profile with an image's latest release, together with a
// boot pack of what it reads, as the next (signed) revision. The disk contents do not change:
// the new release names the same index, so no chunk is written and clients that already hold
// the image fetch nothing but what the pack holds that they lack.
import { readFile } from "node:fs/promises";
import { zstdCompressSync, constants } from "node:zlib";
import { encodePack, packPath, profilePath } from "./boot-pack.ts";
import type { PackInfo } from "./boot-pack.ts";
import { isWholeChunk, planBootSet } from "./boot-set.ts";
import type { BootPart } from "./boot-set.ts";
import { readLatest } from "./catalog.ts";
import { sha256Hex, verifyChunk } from "./chunks.ts";
import { ReleaseError } from "./errors.ts";
import { chunkFile, releasePath } from "./layout.ts";
import type { SecretKey } from "./minisign.ts";
import { DEFAULT_ZSTD_LEVEL, publishRelease } from "./pack.ts";
import { mapLimit } from "./parallel.ts";
import { decodeRelease } from "./release.ts";
import { loadReleaseIndex } from "./source.ts";
import { MAX_RELEASE_FILE_BYTES, maxFrameBytes } from "./limits.ts";
import { openStore } from "./open-store.ts";
import { decodeProfile, encodeProfile, regionDataBytes } from "./profile.ts";
import type { ProfileEntry } from "./profile.ts";
import { requireWritable } from "./store.ts";
import type { StoreReader } from "./store.ts";

export interface OptimizeResult {
  name: string;
  /** The release the profile was recorded against. */
  baseRevision: number;
  revision: number;
  releasePath: string;
  profileDigest: string;
  profileRegions: number;
  /** Bytes the profile's regions cover (what the recorded boot read). */
  profileBytes: number;
  /** Of those, the bytes in chunks with data (all-zero chunks are never fetched). */
  profileDataBytes: number;
  pack: PackInfo;
  /** Uncompressed bytes of the pack's chunks and pieces. */
  packChunkBytes: number;
  /** Of the pack's entries: whole chunks, and pieces of chunks. */
  packWholeChunks: number;
  packPieces: number;
  signed: boolean;
}

export async function optimizeRelease(options: {
  store: string;
  name: string;
  profile: string;
  key?: SecretKey;
  /** Whole chunks only (a format 1 pack, which clients before pieces can read). */
  wholeChunks?: boolean;
}): Promise<OptimizeResult> {
  const reader = requireWritable(openStore(options.store), "optimize");
  const revision = await readLatest(reader, options.name);
  if (revision === null) {
    throw new ReleaseError(`Image ${options.name} has no releases in ${reader.location}`);
  }
  const base = decodeRelease(
    await reader.read(releasePath(options.name, revision), {
      maxBytes: MAX_RELEASE_FILE_BYTES,
      what: "release",
    }),
    reader.describe(releasePath(options.name, revision)),
  );
  const index = await loadReleaseIndex(reader, base);
  const entries = decodeProfile(await readFile(options.profile, "utf8"), options.profile);
  if (entries.length === 0) throw new ReleaseError(`Profile ${options.profile} has no regions`);
  const outside = entries.find((e) => e.offset + e.length > index.size);
  if (outside) {
    throw new ReleaseError(
      `Profile ${options.profile} reads at ${outside.offset}, beyond ${options.name}@${revision} (${index.size} bytes): it was recorded for another image`,
    );
  }
  // Stored in a normal form, named by its digest.
  const profileText = encodeProfile(entries);
  const profileDigest = sha256Hex(Buffer.from(profileText));
  // Content-addressed: when it is already there, the same bytes are.
  await reader.create(profilePath(profileDigest), profileText);

  const parts = planBootSet(index, entries).map((part) =>
    options.wholeChunks
      ? { chunk: part.chunk, offset: part.chunk.offset, size: part.chunk.size }
      : part,
  );
  // (Whole chunks only: a chunk several pieces came from goes in once.)
  const unique = options.wholeChunks
    ? [...new Map(parts.map((p) => [p.chunk.id, p])).values()]
    : parts;
  // A chunk several pieces are cut from is read and checked once.
  const checked = new Map<string, Promise<Buffer>>();
  const frames = await mapLimit(unique, 16, (part) => packedPart(reader, part, checked));
  const pack = encodePack(frames, options.wholeChunks ? 1 : 2);
  await reader.create(packPath(pack.info.digest), pack.bytes);

  const published = await publishRelease(
    { store: options.store, name: options.name, key: options.key },
    {
      size: base.size,
      chunks: base.chunks,
      chunker: base.chunker,
      indexDigest: base.index,
      profile: profileDigest,
      pack: pack.info,
    },
  );
  return {
    name: options.name,
    baseRevision: revision,
    revision: published.release.revision,
    releasePath: published.path,
    profileDigest,
    profileRegions: entries.length,
    profileBytes: coveredBytes(entries),
    profileDataBytes: regionDataBytes(index, entries),
    pack: pack.info,
    packChunkBytes: unique.reduce((n, p) => n + p.size, 0),
    packWholeChunks: unique.filter(isWholeChunk).length,
    packPieces: unique.filter((p) => !isWholeChunk(p)).length,
    signed: options.key !== undefined,
  };
}

/**
 * One entry of the pack: a whole chunk as stored, or a piece cut from its checked bytes and
 * compressed on its own, named by the SHA-256 of its bytes like any chunk.
 */
async function packedPart(
  reader: StoreReader,
  part: BootPart,
  checked: Map<string, Promise<Buffer>>,
): Promise<{ chunk: { id: string; size: number; offset: number }; frame: Buffer }> {
  const path = `chunks/${chunkFile(part.chunk.id)}`;
  const read = (): Promise<Buffer> =>
    reader.read(path, { maxBytes: maxFrameBytes(part.chunk.size), what: "chunk" });
  if (isWholeChunk(part)) return { chunk: part.chunk, frame: await read() };
  let pending = checked.get(part.chunk.id);
  if (!pending) {
    pending = read().then((frame) => verifyChunk(frame, part.chunk, reader.describe(path)));
    checked.set(part.chunk.id, pending);
  }
  const data = await pending;
  const bytes = data.subarray(
    part.offset - part.chunk.offset,
    part.offset - part.chunk.offset + part.size,
  );
  return {
    chunk: { id: sha256Hex(bytes), size: part.size, offset: part.offset },
    frame: zstdCompressSync(bytes, {
      params: { [constants.ZSTD_c_compressionLevel]: DEFAULT_ZSTD_LEVEL },
    }),
  };
}

/** Distinct bytes the regions cover. */
export function coveredBytes(entries: readonly ProfileEntry[]): number {
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  let total = 0;
  let end = 0;
  for (const e of sorted) {
    const from = Math.max(e.offset, end);
    const to = e.offset + e.length;
    if (to > from) total += to - from;
    end = Math.max(end, to);
  }
  return total;
}
