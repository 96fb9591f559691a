// `inetboot gc`: remove releases beyond --keep, then chunks, indexes, boot profiles and boot
// packs no kept release uses.
// Chunks touched within the grace period are kept: a pack running now may be reusing them.
import { readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { decodeBlobIndex } from "./caibx.ts";
import { scanLocalCatalog, writeCatalog } from "./catalog.ts";
import { ReleaseError } from "./errors.ts";
import { CHUNKS_DIR, indexPath, isChunkId, latestPath, releasePath } from "./layout.ts";
import { isErrno, writeFileAtomic } from "../lib/atomic-file.ts";
import { decodeRelease } from "./release.ts";

export const DEFAULT_GC_GRACE_SECONDS = 3600;

export interface GcPlan {
  releases: string[];
  indexes: string[];
  /** Boot packs and boot profiles no kept release names. */
  packs: string[];
  chunks: string[];
  tempFiles: string[];
  bytes: number;
  /** Unreferenced chunks kept because they were written or reused within the grace period. */
  recentKept: number;
  keptReleases: number;
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
}

export async function planGc(
  root: string,
  options: { keep?: number; graceSeconds?: number } = {},
): Promise<GcPlan> {
  const keep = options.keep;
  if (keep !== undefined && (!Number.isInteger(keep) || keep < 1)) {
    throw new ReleaseError(
      `--keep ${keep} is not valid: expected a whole number of releases, at least 1`,
    );
  }
  const graceMs = (options.graceSeconds ?? DEFAULT_GC_GRACE_SECONDS) * 1000;
  const now = Date.now();
  const plan: GcPlan = {
    releases: [],
    indexes: [],
    packs: [],
    chunks: [],
    tempFiles: [],
    bytes: 0,
    recentKept: 0,
    keptReleases: 0,
  };
  const catalog = await scanLocalCatalog(root);
  const keptIndexes = new Set<string>();
  const keptPacks = new Set<string>();
  for (const [name, revisions] of Object.entries(catalog.images)) {
    const kept = keep === undefined ? revisions : revisions.slice(-keep);
    plan.keptReleases += kept.length;
    for (const revision of revisions) {
      if (!kept.includes(revision)) {
        plan.releases.push(releasePath(name, revision));
        continue;
      }
      const path = join(root, releasePath(name, revision));
      // A kept release that cannot be read stops gc: deleting its chunks could lose data.
      const release = decodeRelease(await readFileOr(path), path);
      keptIndexes.add(release.index);
      if (release.profile) keptPacks.add(release.profile);
      if (release.pack) keptPacks.add(release.pack.digest);
    }
  }
  const keptChunks = new Set<string>();
  for (const digest of keptIndexes) {
    const path = join(root, indexPath(digest));
    for (const c of decodeBlobIndex(await readFileOr(path), path).chunks) keptChunks.add(c.id);
  }
  for (const file of await listDir(join(root, "indexes"))) {
    const m = /^([0-9a-f]{64})\.caibx$/.exec(file);
    if (file.endsWith(".tmp")) await considerTemp(join("indexes", file));
    else if (m && !keptIndexes.has(m[1])) {
      plan.indexes.push(join("indexes", file));
      plan.bytes += (await stat(join(root, "indexes", file))).size;
    }
  }
  for (const folder of ["packs", "profiles"]) {
    for (const file of await listDir(join(root, folder))) {
      const m = /^([0-9a-f]{64})\.(pack|profile)$/.exec(file);
      if (file.endsWith(".tmp")) await considerTemp(join(folder, file));
      else if (m && !keptPacks.has(m[1])) {
        plan.packs.push(join(folder, file));
        plan.bytes += (await stat(join(root, folder, file))).size;
      }
    }
  }
  for (const dir of await listDir(join(root, CHUNKS_DIR))) {
    for (const file of await listDir(join(root, CHUNKS_DIR, dir))) {
      const rel = join(CHUNKS_DIR, dir, file);
      if (file.endsWith(".tmp")) {
        await considerTemp(rel);
        continue;
      }
      const id = file.replace(/\.cacnk$/, "");
      if (!isChunkId(id) || keptChunks.has(id)) continue;
      const st = await stat(join(root, rel));
      if (now - st.mtimeMs < graceMs) {
        plan.recentKept++;
        continue;
      }
      plan.chunks.push(rel);
      plan.bytes += st.size;
    }
  }
  return plan;

  async function considerTemp(rel: string): Promise<void> {
    const st = await stat(join(root, rel));
    if (now - st.mtimeMs >= graceMs) {
      plan.tempFiles.push(rel);
      plan.bytes += st.size;
    }
  }
}

async function readFileOr(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ReleaseError(
      `Cannot gc: ${path} is unreadable (${(err as Error).message}); fix the store first`,
    );
  }
}

/** Carries out a plan: releases first (so nothing points at what goes next), then the rest. */
export async function applyGc(root: string, plan: GcPlan): Promise<void> {
  for (const rel of plan.releases) {
    await rm(join(root, `${rel}.minisig`), { force: true });
    await rm(join(root, rel), { force: true });
  }
  const catalog = await writeCatalog(root);
  for (const [name, revisions] of Object.entries(catalog.images)) {
    await writeFileAtomic(join(root, latestPath(name)), `${revisions[revisions.length - 1]}\n`);
  }
  for (const rel of [...plan.indexes, ...plan.packs, ...plan.chunks, ...plan.tempFiles]) {
    await rm(join(root, rel), { force: true });
  }
}
