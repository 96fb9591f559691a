// `inetboot ls` and `inetboot diff`: what a store holds and what moving between releases costs.
import type { BlobIndex } from "./caibx.ts";
import { readCatalog } from "./catalog.ts";
import { chunkLocation, isZeroChunk } from "./chunks.ts";
import type { ChunkSource } from "./chunks.ts";
import { releasePath } from "./layout.ts";
import { mapLimit } from "./parallel.ts";
import { loadReleaseIndex, openRelease } from "./source.ts";
import type { StoreReader } from "./store.ts";
import type { TrustPolicy } from "./trust.ts";

export interface ListedRelease {
  name: string;
  revision: number;
  created: string | null;
  size: number | null;
  chunks: number | null;
  signer: string | null;
  /** True when the signature was checked against a trusted key. */
  verified: boolean;
  /** Bytes of this image that the previous listed revision already had. */
  sharedWithPrevious: number | null;
  digest: string | null;
  /** Compressed bytes of its distinct chunks in the store (when asked for; null otherwise). */
  storedBytes: number | null;
  /** The release carries a boot profile / a boot pack. */
  profile: boolean;
  pack: boolean;
  problem: string | null;
}

/** Bytes of `next` whose chunks `prev` also has (zero chunks count as shared: never fetched). */
export function sharedBytes(prev: BlobIndex, next: BlobIndex): number {
  const have = new Set(prev.chunks.map((c) => c.id));
  let shared = 0;
  for (const c of next.chunks) if (have.has(c.id) || isZeroChunk(c)) shared += c.size;
  return shared;
}

export async function listStore(
  reader: StoreReader,
  options: { policy: TrustPolicy; storedBytes?: boolean },
): Promise<ListedRelease[]> {
  const catalog = await readCatalog(reader);
  // Listing never refuses: unsigned or untrusted releases are shown as such.
  const policy: TrustPolicy = { ...options.policy, insecure: true, statePath: null };
  const out: ListedRelease[] = [];
  for (const name of Object.keys(catalog.images).sort()) {
    let prev: BlobIndex | null = null;
    for (const revision of catalog.images[name]) {
      const row: ListedRelease = {
        name,
        revision,
        created: null,
        size: null,
        chunks: null,
        signer: null,
        verified: false,
        sharedWithPrevious: null,
        digest: null,
        storedBytes: null,
        profile: false,
        pack: false,
        problem: null,
      };
      try {
        const opened = await openRelease(reader, releasePath(name, revision), {
          policy,
          expect: { name, revision },
        });
        Object.assign(row, {
          created: opened.release.created,
          size: opened.release.size,
          chunks: opened.release.chunks,
          signer: opened.trust.signer,
          verified: opened.trust.verified,
          digest: opened.digest,
          profile: opened.release.profile != null,
          pack: opened.release.pack != null,
        });
        const index = await loadReleaseIndex(reader, opened.release);
        if (prev) row.sharedWithPrevious = sharedBytes(prev, index);
        if (options.storedBytes) row.storedBytes = await storedBytes(reader, index);
        prev = index;
      } catch (err) {
        row.problem = (err as Error).message;
        prev = null;
      }
      out.push(row);
    }
  }
  return out;
}

/**
 * Compressed bytes the image's distinct non-zero chunks take in the store (one size query per
 * chunk: cheap for a local store, a HEAD request each over HTTP); null if one is missing.
 */
export async function storedBytes(reader: StoreReader, index: BlobIndex): Promise<number | null> {
  const ids = [...new Set(index.chunks.filter((c) => !isZeroChunk(c)).map((c) => c.id))];
  const source = { reader, prefix: "chunks/" };
  const sizes = await mapLimit(ids, 32, (id) => reader.size(chunkLocation(source, id)));
  return sizes.every((n) => n !== null) ? sizes.reduce<number>((t, n) => t + n, 0) : null;
}

export interface DiffReport {
  /** Unique non-zero chunks of B that A lacks: what a machine with A must fetch. */
  fetchChunks: number;
  fetchBytes: number;
  /** Compressed bytes on the wire for those chunks (null when the store cannot tell). */
  fetchStoredBytes: number | null;
  /** Unique non-zero chunks and bytes of B in total. */
  totalChunks: number;
  totalBytes: number;
  sizeA: number;
  sizeB: number;
}

export async function diffImages(
  a: BlobIndex,
  b: BlobIndex,
  source?: ChunkSource,
): Promise<DiffReport> {
  const have = new Set(a.chunks.map((c) => c.id));
  const unique = new Map<string, number>();
  for (const c of b.chunks) if (!isZeroChunk(c)) unique.set(c.id, c.size);
  const missing = [...unique].filter(([id]) => !have.has(id));
  let fetchStoredBytes: number | null = null;
  if (source) {
    const sizes = await mapLimit(missing, 16, ([id]) =>
      source.reader.size(chunkLocation(source, id)),
    );
    fetchStoredBytes = sizes.every((s) => s !== null)
      ? sizes.reduce<number>((t, s) => t + s, 0)
      : null;
  }
  return {
    fetchChunks: missing.length,
    fetchBytes: missing.reduce((t, [, size]) => t + size, 0),
    fetchStoredBytes,
    totalChunks: unique.size,
    totalBytes: [...unique.values()].reduce((t, s) => t + s, 0),
    sizeA: a.size,
    sizeB: b.size,
  };
}
