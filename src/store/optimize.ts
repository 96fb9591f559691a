// `inetboot optimize`: publishes a boot profile with an image's latest release, together with a
// boot pack of the chunks it touches, as the next (signed) revision. The disk contents do not
// change: the new release names the same index, so no chunk is written and clients that already
// hold the image fetch nothing but the pack's missing chunks.
import { readFile } from "node:fs/promises";
import { encodePack, packPath, profilePath } from "./boot-pack.ts";
import type { PackInfo } from "./boot-pack.ts";
import { readLatest } from "./catalog.ts";
import { sha256Hex } from "./chunks.ts";
import { ReleaseError } from "./errors.ts";
import { chunkFile, releasePath } from "./layout.ts";
import type { SecretKey } from "./minisign.ts";
import { publishRelease } from "./pack.ts";
import { decodeRelease } from "./release.ts";
import { loadReleaseIndex } from "./source.ts";
import { MAX_RELEASE_FILE_BYTES, maxFrameBytes } from "./limits.ts";
import { openStore } from "./open-store.ts";
import { decodeProfile, encodeProfile, profileChunks } from "./profile.ts";
import type { ProfileEntry } from "./profile.ts";
import { requireWritable } from "./store.ts";

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
  pack: PackInfo;
  /** Uncompressed bytes of the pack's chunks. */
  packChunkBytes: number;
  signed: boolean;
}

export async function optimizeRelease(options: {
  store: string;
  name: string;
  profile: string;
  key?: SecretKey;
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

  const chunks = profileChunks(index, entries);
  const frames = await Promise.all(
    chunks.map(async (chunk) => ({
      chunk,
      frame: await reader.read(`chunks/${chunkFile(chunk.id)}`, {
        maxBytes: maxFrameBytes(chunk.size),
        what: "chunk",
      }),
    })),
  );
  const pack = encodePack(frames);
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
    pack: pack.info,
    packChunkBytes: chunks.reduce((n, c) => n + c.size, 0),
    signed: options.key !== undefined,
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
