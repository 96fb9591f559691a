// Resolving what a user names (NAME, NAME@REVISION, NAME@sha256:DIGEST, a release file or URL,
// a .caibx path or URL) to a verified index and the chunk source to read it from.
import { stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { decodeBlobIndex } from "./caibx.ts";
import type { BlobIndex } from "./caibx.ts";
import { isZeroChunk, sha256Hex } from "./chunks.ts";
import type { ChunkSource } from "./chunks.ts";
import { readCatalog, readLatest } from "./catalog.ts";
import { NotFoundError, ReleaseError, UsageError } from "./errors.ts";
import { CHUNKS_DIR, chunkFile, indexPath, isImageName, releasePath } from "./layout.ts";
import { indexBytesFor, MAX_INDEX_BYTES, MAX_RELEASE_FILE_BYTES } from "./limits.ts";
import { LocalStore } from "./local-store.ts";
import { decodeRelease } from "./release.ts";
import type { Release } from "./release.ts";
import { isUrl, openStore } from "./open-store.ts";
import type { ReadOptions, StoreReader } from "./store.ts";
import { acceptRelease, checkSignature } from "./trust.ts";
import type { TrustPolicy, TrustVerdict } from "./trust.ts";

export interface OpenedRelease {
  release: Release;
  /** SHA-256 of the release file: what a pin names. */
  digest: string;
  /** Path or URL of the release file. */
  where: string;
  trust: TrustVerdict;
}

export interface OpenedImage {
  /** What was opened, for messages. */
  label: string;
  index: BlobIndex;
  chunks: ChunkSource;
  release: OpenedRelease | null;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Store root (directory or URL); required unless SOURCE is a release path/URL. */
  store?: string;
  policy: TrustPolicy;
  /** Record the accepted revision in the anti-rollback state (clients do; inspection does not). */
  record?: boolean;
  /** A local store (a chunk cache) whose copy of the index is used when its digest matches. */
  indexCache?: string;
  /**
   * The user explicitly accepts sources that carry no signature (a bare .caibx): --insecure,
   * `insecure: true`. Default: `policy.insecure`. Pass it when `policy.insecure` was derived
   * (e.g. "no --trust given" for inspection commands) rather than asked for.
   */
  allowUnsigned?: boolean;
}

export type SourceSpec =
  | { kind: "index"; location: string }
  | { kind: "release-file"; location: string }
  | { kind: "name"; name: string; revision?: number; digest?: string };

export function parseSource(source: string): SourceSpec {
  if (/\.caibx$/i.test(source)) return { kind: "index", location: source };
  if (isUrl(source) || /\.json$/i.test(source)) return { kind: "release-file", location: source };
  const m = /^([^@]+)(?:@(?:(\d+)|sha256:([0-9a-f]{64})))?$/.exec(source);
  if (!m || !isImageName(m[1])) {
    throw new UsageError(
      `Cannot understand source "${source}": expected NAME, NAME@REVISION, NAME@sha256:DIGEST, a release .json file or URL, or a .caibx index`,
    );
  }
  return { kind: "name", name: m[1], revision: m[2] ? Number(m[2]) : undefined, digest: m[3] };
}

/** Runs `fn` with a reader on the folder of a local path or URL, and the file's name in it. */
async function inFolderOf<T>(
  location: string,
  fn: (reader: StoreReader, file: string) => Promise<T>,
): Promise<T> {
  const full = isUrl(location) ? new URL(location).href : resolve(location);
  const reader = openStore(isUrl(full) ? new URL(".", full).href : dirname(full));
  try {
    return await fn(reader, decodeURIComponent(full.split("/").pop()!));
  } finally {
    await reader.close();
  }
}

/** The store root of a release file at <root>/releases/<NAME>/<REV>.json. */
function storeRootOf(location: string): string {
  return isUrl(location)
    ? new URL("../../", location).href
    : resolve(dirname(location), "..", "..");
}

/** Reads a file the caller cannot do without; absence is a ReleaseError naming `what` and where. */
async function readRequired(
  reader: StoreReader,
  path: string,
  what: string,
  options: ReadOptions,
): Promise<Buffer> {
  try {
    return await reader.read(path, options);
  } catch (err) {
    if (err instanceof NotFoundError)
      throw new ReleaseError(`${what} not found: ${reader.describe(path)}`);
    throw err;
  }
}

async function readOptional(
  reader: StoreReader,
  path: string,
  options: ReadOptions,
): Promise<Buffer | null> {
  try {
    return await reader.read(path, options);
  } catch (err) {
    if (err instanceof NotFoundError) return null;
    throw err;
  }
}

/** Opens, checks and (optionally) records the release at `path` in `reader`. */
export async function openRelease(
  reader: StoreReader,
  path: string,
  options: {
    policy: TrustPolicy;
    pinnedDigest?: string;
    record?: boolean;
    expect?: { name: string; revision?: number };
  },
): Promise<OpenedRelease> {
  const where = reader.describe(path);
  const small = { maxBytes: MAX_RELEASE_FILE_BYTES, what: "release" };
  const bytes = await readRequired(reader, path, "Release", small);
  const digest = sha256Hex(bytes);
  if (options.pinnedDigest && digest !== options.pinnedDigest) {
    throw new ReleaseError(
      `Release ${where} has digest ${digest}, not the pinned ${options.pinnedDigest}`,
    );
  }
  const sig = await readOptional(reader, `${path}.minisig`, { ...small, what: "signature" });
  // The signature is checked before the content is trusted for anything.
  const trust = checkSignature(bytes, sig?.toString("utf8") ?? null, {
    policy: options.policy,
    where,
  });
  const release = decodeRelease(bytes, where);
  const expect = options.expect;
  if (
    expect &&
    (release.name !== expect.name ||
      (expect.revision !== undefined && release.revision !== expect.revision))
  ) {
    throw new ReleaseError(
      `Refusing ${where}: it describes ${release.name} revision ${release.revision}, expected ${expect.name}${expect.revision !== undefined ? ` revision ${expect.revision}` : ""} (a release was moved or replaced)`,
    );
  }
  if (options.record) {
    await acceptRelease(release, {
      digest,
      pinned: options.pinnedDigest !== undefined,
      statePath: trust.verified ? options.policy.statePath : null,
    });
  }
  return { release, digest, where, trust };
}

/** Finds a release of `name` whose file has `digest` (for pinned roll-backs). */
async function findByDigest(reader: StoreReader, name: string, digest: string): Promise<number> {
  const catalog = await readCatalog(reader);
  for (const revision of (catalog.images[name] ?? []).slice().reverse()) {
    const bytes = await readOptional(reader, releasePath(name, revision), {
      maxBytes: MAX_RELEASE_FILE_BYTES,
      what: "release",
    });
    if (bytes && sha256Hex(bytes) === digest) return revision;
  }
  throw new ReleaseError(`No release of ${name} in ${reader.location} has digest ${digest}`);
}

/**
 * Reads and checks an index; `expectDigest` is the digest a release promised for it.
 * `options.maxBytes` bounds the read (default MAX_INDEX_BYTES; loadReleaseIndex passes the
 * exact size the release implies).
 */
export async function loadIndex(
  reader: StoreReader,
  path: string,
  expectDigest?: string,
  options: { maxBytes?: number } = {},
): Promise<BlobIndex> {
  const where = reader.describe(path);
  const bytes = await readRequired(reader, path, "Index", {
    maxBytes: options.maxBytes ?? MAX_INDEX_BYTES,
    what: "index",
  });
  if (expectDigest && sha256Hex(bytes) !== expectDigest) {
    throw new ReleaseError(
      `Index ${where} does not match the digest its release names (corrupt or replaced)`,
    );
  }
  return decodeBlobIndex(bytes, where);
}

/** The index a release names: read no further than its exact size, checked against its digest. */
export function loadReleaseIndex(
  reader: StoreReader,
  release: Pick<Release, "index" | "chunks">,
): Promise<BlobIndex> {
  return loadIndex(reader, indexPath(release.index), release.index, {
    maxBytes: indexBytesFor(release.chunks),
  });
}

/** Decides whether chunks live under chunks/ (inetboot store) or at the root (a bare casync store). */
async function chunkPrefix(reader: StoreReader, index: BlobIndex): Promise<string> {
  if (reader instanceof LocalStore) {
    const s = await stat(reader.resolvePath(CHUNKS_DIR)).catch(() => null);
    return s?.isDirectory() ? `${CHUNKS_DIR}/` : "";
  }
  const probe = index.chunks.find((c) => !isZeroChunk(c));
  if (!probe) return `${CHUNKS_DIR}/`;
  return (await reader.size(`${CHUNKS_DIR}/${chunkFile(probe.id)}`)) !== null
    ? `${CHUNKS_DIR}/`
    : "";
}

export async function openImage(source: string, options: OpenOptions): Promise<OpenedImage> {
  const spec = parseSource(source);
  if (spec.kind === "index") {
    checkUnsignedAllowed(source, options);
    if (!options.store) {
      throw new UsageError(
        `Source ${source} is a bare index: pass --store DIR|URL where its chunks are`,
      );
    }
    const bytes = await inFolderOf(spec.location, (r, file) =>
      readRequired(r, file, "Index", { maxBytes: MAX_INDEX_BYTES, what: "index" }),
    );
    const index = decodeBlobIndex(bytes, spec.location);
    const reader = openStore(options.store);
    return {
      label: spec.location,
      index,
      chunks: { reader, prefix: await chunkPrefix(reader, index) },
      release: null,
      close: () => reader.close(),
    };
  }
  const reader = openStore(
    spec.kind === "release-file"
      ? (options.store ?? storeRootOf(spec.location))
      : requireStore(source, options),
  );
  try {
    let release: OpenedRelease;
    if (spec.kind === "release-file") {
      release = await inFolderOf(spec.location, (r, file) =>
        openRelease(r, file, { policy: options.policy, record: options.record }),
      );
    } else {
      let revision = spec.revision;
      if (spec.digest) revision = await findByDigest(reader, spec.name, spec.digest);
      if (revision === undefined) {
        const latest = await readLatest(reader, spec.name);
        if (latest === null) {
          throw new ReleaseError(
            `Image ${spec.name} has no releases in ${reader.location} (no ${reader.describe(`releases/${spec.name}/latest`)})`,
          );
        }
        revision = latest;
      }
      release = await openRelease(reader, releasePath(spec.name, revision), {
        policy: options.policy,
        pinnedDigest: spec.digest,
        record: options.record,
        expect: { name: spec.name, revision },
      });
    }
    const cached = options.indexCache
      ? await loadReleaseIndex(new LocalStore(options.indexCache), release.release).catch(
          () => null,
        )
      : null;
    const index = cached ?? (await loadReleaseIndex(reader, release.release));
    if (index.size !== release.release.size) {
      throw new ReleaseError(
        `Index of ${release.where} covers ${index.size} bytes, but the release says ${release.release.size}`,
      );
    }
    return {
      label: `${release.release.name}@${release.release.revision}`,
      index,
      chunks: { reader, prefix: `${CHUNKS_DIR}/` },
      release,
      close: () => reader.close(),
    };
  } catch (err) {
    await reader.close();
    throw err;
  }
}

/**
 * A bare index carries no signature: nothing can vouch for it. Refused when keys are trusted
 * (they would be silently ignored), and unless unsigned sources were explicitly accepted.
 */
export function checkUnsignedAllowed(
  source: string,
  options: Pick<OpenOptions, "policy" | "allowUnsigned">,
): void {
  const why = `${source} is a bare index: it carries no signature`;
  const signed =
    "open its signed release instead (NAME, NAME@REVISION, NAME@sha256:DIGEST or releases/NAME/REV.json)";
  if (options.policy.trusted.length > 0) {
    throw new ReleaseError(
      `Refusing ${why}, so the trusted keys cannot be checked against it; ${signed}, or drop the trusted keys and pass --insecure (insecure: true) to read it unchecked`,
    );
  }
  if (!(options.allowUnsigned ?? options.policy.insecure === true)) {
    throw new ReleaseError(
      `Refusing ${why}, so nothing vouches for its content; ${signed} with --trust KEY.pub, or pass --insecure (insecure: true) to read it unchecked`,
    );
  }
}

function requireStore(source: string, options: OpenOptions): string {
  if (!options.store) throw new UsageError(`Source ${source} names an image: pass --store DIR|URL`);
  return options.store;
}
