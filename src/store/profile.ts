// Boot profiles: the ordered list of regions a boot read first, as text lines
// "OFFSET LENGTH MILLISECONDS" after a header line. A store file format (profiles/<sha256>.profile,
// named by a release); written by the block tracer, read by the prefetcher, optimize and gc.
import { readFileSync } from "node:fs";
import { profilePath } from "./boot-pack.ts";
import { chunkIndexAt, chunksInRange } from "./caibx.ts";
import type { BlobIndex, IndexChunk } from "./caibx.ts";
import { isZeroChunk, sha256Hex } from "./chunks.ts";
import { NotFoundError, ReleaseError } from "./errors.ts";
import { MAX_PROFILE_BYTES } from "./limits.ts";
import type { StoreReader } from "./store.ts";

export const PROFILE_HEADER = "inetboot-profile 1";

export interface ProfileEntry {
  offset: number;
  length: number;
  /** Milliseconds since the device was opened. */
  ms: number;
}

export class ProfileFormatError extends Error {
  readonly code = "ERR_PROFILE_FORMAT";
}

export function encodeProfileLine(e: ProfileEntry): string {
  return `${e.offset} ${e.length} ${Math.round(e.ms)}\n`;
}

/** Profile-file text for `entries`. */
export function encodeProfile(entries: readonly ProfileEntry[]): string {
  return PROFILE_HEADER + "\n" + entries.map((e) => encodeProfileLine(e)).join("");
}

export function decodeProfile(text: string, name = "profile"): ProfileEntry[] {
  const lines = text.split("\n");
  if (lines[0].trim() !== PROFILE_HEADER) {
    throw new ProfileFormatError(`Cannot read ${name}: the first line is not "${PROFILE_HEADER}"`);
  }
  const out: ProfileEntry[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    const parts = line.split(/\s+/).map(Number);
    if (parts.length !== 3 || !parts.every((n) => Number.isSafeInteger(n) && n >= 0)) {
      throw new ProfileFormatError(
        `Cannot read ${name}: line ${i + 1} "${line}" is not "OFFSET LENGTH MS"`,
      );
    }
    out.push({ offset: parts[0], length: parts[1], ms: parts[2] });
  }
  return out;
}

export function readProfile(path: string): ProfileEntry[] {
  return decodeProfile(readFileSync(path, "utf8"), path);
}

/** The distinct chunks (all-zero ones left out: never fetched) a profile's regions touch. */
export function profileChunks(index: BlobIndex, profile: readonly ProfileEntry[]): IndexChunk[] {
  const out = new Map<string, IndexChunk>();
  for (const e of profile) {
    for (const c of chunksInRange(index, e.offset, e.length)) if (!isZeroChunk(c)) out.set(c.id, c);
  }
  return [...out.values()];
}

/**
 * Distinct bytes of the regions that lie in chunks with data: what reading them must fetch at
 * the least (all-zero chunks are never fetched). The numerator of a boot set's occupancy.
 */
export function regionDataBytes(index: BlobIndex, regions: readonly ProfileEntry[]): number {
  const sorted = regions
    .filter((r) => r.length > 0)
    .map((r) => ({ offset: r.offset, end: Math.min(index.size, r.offset + r.length) }))
    .sort((a, b) => a.offset - b.offset);
  let total = 0;
  let done = 0; // bytes before this are counted
  for (const r of sorted) {
    const from = Math.max(r.offset, done);
    if (r.end <= from) continue;
    for (let i = chunkIndexAt(index, from); i < index.chunks.length; i++) {
      const c = index.chunks[i];
      if (c.offset >= r.end) break;
      if (!isZeroChunk(c)) total += Math.min(r.end, c.offset + c.size) - Math.max(from, c.offset);
    }
    done = r.end;
  }
  return total;
}

/**
 * The release's boot profile, checked against the digest the signed release names; null when
 * the store does not have it (the image boots without a prefetch plan). A profile that is there
 * but too large, tampered with or malformed is a ReleaseError or ProfileFormatError naming the
 * file: the store is broken, and is not treated as if the profile were simply absent.
 */
export async function readReleaseProfile(
  reader: StoreReader,
  digest: string,
): Promise<ProfileEntry[] | null> {
  const path = profilePath(digest);
  let bytes: Buffer;
  try {
    bytes = await reader.read(path, { maxBytes: MAX_PROFILE_BYTES, what: "profile" });
  } catch (err) {
    if (err instanceof NotFoundError) return null;
    throw err;
  }
  const actual = sha256Hex(bytes);
  if (actual !== digest) {
    throw new ReleaseError(
      `Cannot use boot profile ${reader.describe(path)}: its SHA-256 is ${actual}, expected ${digest} as its release names (the store is damaged or tampered with)`,
    );
  }
  return decodeProfile(bytes.toString("utf8"), reader.describe(path));
}
