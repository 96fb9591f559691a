// `inetboot verify`: every chunk every release references is present and intact, and so are
// the boot packs and profiles releases name (verify-pack.ts).
import { ChunkCorruptError, ChunkMissingError, ReleaseError } from "./errors.ts";
import { readCatalog } from "./catalog.ts";
import { chunkLocation, isZeroChunk, loadChunk } from "./chunks.ts";
import type { ChunkSource } from "./chunks.ts";
import { releasePath } from "./layout.ts";
import { mapLimit } from "./parallel.ts";
import { loadReleaseIndex, openRelease } from "./source.ts";
import type { StoreReader } from "./store.ts";
import type { Release } from "./release.ts";
import type { TrustPolicy } from "./trust.ts";
import { verifyReleasePack } from "./verify-pack.ts";

export interface VerifyReport {
  releases: {
    name: string;
    revision: number;
    signer: string | null;
    verified: boolean;
    problem: string | null;
  }[];
  chunksChecked: number;
  missing: { id: string; where: string }[];
  corrupt: { id: string; where: string }[];
  /** The boot pack and profile of each release that names one. */
  packs: { name: string; revision: number; entries: number; problems: string[] }[];
  ok: boolean;
}

export async function verifyStore(
  reader: StoreReader,
  options: {
    name?: string;
    policy: TrustPolicy;
    concurrency?: number;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<VerifyReport> {
  const catalog = await readCatalog(reader);
  const names = options.name ? [options.name] : Object.keys(catalog.images).sort();
  const report: VerifyReport = {
    releases: [],
    chunksChecked: 0,
    missing: [],
    corrupt: [],
    packs: [],
    ok: true,
  };
  if (options.name && !catalog.images[options.name]) {
    throw new ReleaseError(`Image ${options.name} is not in ${reader.location}`);
  }
  const wanted = new Map<string, number>();
  const withPacks: { name: string; revision: number; release: Release; size: number }[] = [];
  for (const name of names) {
    for (const revision of catalog.images[name]) {
      const entry = {
        name,
        revision,
        signer: null as string | null,
        verified: false,
        problem: null as string | null,
      };
      report.releases.push(entry);
      try {
        const opened = await openRelease(reader, releasePath(name, revision), {
          policy: options.policy,
          expect: { name, revision },
        });
        entry.signer = opened.trust.signer;
        entry.verified = opened.trust.verified;
        const index = await loadReleaseIndex(reader, opened.release);
        for (const c of index.chunks) if (!isZeroChunk(c)) wanted.set(c.id, c.size);
        const release = opened.release;
        if (release.pack || release.profile)
          withPacks.push({ name, revision, release, size: index.size });
      } catch (err) {
        entry.problem = (err as Error).message;
        report.ok = false;
      }
    }
  }
  const source: ChunkSource = { reader, prefix: "chunks/" };
  const ids = [...wanted.keys()];
  const total = ids.length + withPacks.reduce((n, p) => n + (p.release.pack?.chunks ?? 0), 0);
  let done = 0;
  await mapLimit(ids, options.concurrency ?? 8, async (id) => {
    try {
      await loadChunk(source, { id, size: wanted.get(id)! });
    } catch (err) {
      if (err instanceof ChunkMissingError)
        report.missing.push({ id, where: reader.describe(chunkLocation(source, id)) });
      else if (err instanceof ChunkCorruptError) report.corrupt.push({ id, where: err.message });
      else throw err;
    }
    report.chunksChecked++;
    options.onProgress?.(++done, total);
  });
  for (const { name, revision, release, size } of withPacks) {
    const r = await verifyReleasePack(reader, release, size, () =>
      options.onProgress?.(++done, total),
    );
    report.packs.push({ name, revision, ...r });
    if (r.problems.length > 0) report.ok = false;
  }
  if (report.missing.length > 0 || report.corrupt.length > 0) report.ok = false;
  return report;
}
