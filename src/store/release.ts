// Release manifests: one small JSON file per image version, signed with minisign.
import { ReleaseError } from "./errors.ts";
import { checkPackInfo, maxPackEntries } from "./boot-pack.ts";
import type { PackInfo } from "./boot-pack.ts";
import type { ChunkerParams } from "./chunker.ts";
import { isChunkId, isImageName } from "./layout.ts";

export const RELEASE_FORMAT = "inetboot-release/1";

export interface ReleaseParent {
  revision: number;
  /** SHA-256 of the parent's release file. */
  digest: string;
}

export interface Release {
  format: typeof RELEASE_FORMAT;
  name: string;
  /** Monotonic per name, starting at 1. */
  revision: number;
  /** ISO 8601 UTC creation time. */
  created: string;
  /** Image size in bytes. */
  size: number;
  /** SHA-256 of the .caibx file, stored at indexes/<index>.caibx. */
  index: string;
  chunks: number;
  chunker: ChunkerParams;
  compression: "zstd";
  parent: ReleaseParent | null;
  /** SHA-256 of the boot profile published with this release, if any. */
  profile: string | null;
  /** The boot pack published with this release, if any (absent in older releases: null). */
  pack: PackInfo | null;
  /** minisign key id (upper-case hex) of the signer, or null for an unsigned release. */
  keyId: string | null;
}

export function encodeRelease(release: Release): Buffer {
  return Buffer.from(`${JSON.stringify(release, null, 2)}\n`);
}

/** Parses and validates a release file; `name` (its path or URL) appears in every error. */
export function decodeRelease(bytes: Uint8Array, name: string): Release {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw new ReleaseError(
      `Cannot read release ${name}: not valid JSON (${(err as Error).message}); the file is truncated or corrupt`,
    );
  }
  const fail = (what: string): never => {
    throw new ReleaseError(`Cannot read release ${name}: ${what}`);
  };
  if (typeof value !== "object" || value === null) fail("expected a JSON object");
  const r = value as Record<string, unknown>;
  if (r.format !== RELEASE_FORMAT)
    fail(`format is ${JSON.stringify(r.format)}, expected "${RELEASE_FORMAT}"`);
  if (typeof r.name !== "string" || !isImageName(r.name))
    fail("name is missing or not a valid image name");
  const positive = (key: string, allowZero = false): number => {
    const v = r[key];
    if (!Number.isSafeInteger(v) || (v as number) < (allowZero ? 0 : 1)) {
      fail(
        `${key} is ${JSON.stringify(v)}, expected a ${allowZero ? "non-negative" : "positive"} integer`,
      );
    }
    return v as number;
  };
  positive("revision");
  positive("size", true);
  positive("chunks", true);
  if (typeof r.created !== "string" || Number.isNaN(Date.parse(r.created)))
    fail("created is not a date");
  if (typeof r.index !== "string" || !isChunkId(r.index)) fail("index is not a SHA-256 hex digest");
  const c = r.chunker as Record<string, unknown> | undefined;
  if (!c || ![c.min, c.avg, c.max].every((n) => Number.isSafeInteger(n) && (n as number) > 0)) {
    fail("chunker must have positive integer min, avg and max");
  }
  if (r.compression !== "zstd")
    fail(`compression is ${JSON.stringify(r.compression)}, expected "zstd"`);
  if (r.parent !== null) {
    const p = r.parent as Record<string, unknown> | undefined;
    if (
      !p ||
      !Number.isSafeInteger(p.revision) ||
      typeof p.digest !== "string" ||
      !isChunkId(p.digest)
    ) {
      fail("parent must be null or { revision, digest }");
    }
  }
  if (r.profile !== null && (typeof r.profile !== "string" || !isChunkId(r.profile))) {
    fail("profile must be null or a SHA-256 hex digest");
  }
  const pack = checkPackInfo(r.pack);
  if (typeof pack === "string") fail(pack);
  r.pack = pack;
  // The pack holds chunks (or pieces) of the image: its table (read whole) is bounded by it.
  if (
    typeof pack === "object" &&
    pack !== null &&
    pack.chunks > maxPackEntries(pack.format ?? 1, r.chunks as number, r.size as number)
  ) {
    fail(
      pack.format === 2
        ? `pack holds ${pack.chunks} entries, more than an image of ${String(r.chunks)} chunks and ${String(r.size)} bytes can have`
        : `pack holds ${pack.chunks} chunks, more than the image's ${String(r.chunks)}`,
    );
  }
  if (r.pack !== null && r.profile === null)
    fail("a release with a boot pack must name its profile");
  if (r.keyId !== null && (typeof r.keyId !== "string" || !/^[0-9A-F]{16}$/.test(r.keyId))) {
    fail("keyId must be null or 16 upper-case hex digits");
  }
  return value as Release;
}
