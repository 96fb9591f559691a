// `inetboot gc`: remove releases beyond --keep, then chunks, indexes, boot profiles and boot
// packs no kept release uses.
// Chunks touched within the grace period are kept: a pack running now may be reusing them.
import { decodeBlobIndex } from "./caibx.ts";
import { scanCatalog, writeCatalog } from "./catalog.ts";
import { ReleaseError } from "./errors.ts";
import { CHUNKS_DIR, indexPath, isChunkId, latestPath, releasePath } from "./layout.ts";
import { MAX_INDEX_BYTES, MAX_RELEASE_FILE_BYTES } from "./limits.ts";
import { openStore } from "./open-store.ts";
import { decodeRelease } from "./release.ts";
import { requireWritable } from "./store.ts";
import type { ReadOptions, WritableStore } from "./store.ts";

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

/** Opens `root` for gc: a store given by location, or one already open. */
function gcStore(root: string | WritableStore): WritableStore {
  return typeof root === "string" ? requireWritable(openStore(root), "gc") : root;
}

export async function planGc(
  root: string | WritableStore,
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
  const store = gcStore(root);
  const catalog = await scanCatalog(store);
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
      const path = releasePath(name, revision);
      // A kept release that cannot be read stops gc: deleting its chunks could lose data.
      const release = decodeRelease(
        await readOrStop(store, path, { maxBytes: MAX_RELEASE_FILE_BYTES, what: "release" }),
        store.describe(path),
      );
      keptIndexes.add(release.index);
      if (release.profile) keptPacks.add(release.profile);
      if (release.pack) keptPacks.add(release.pack.digest);
    }
  }
  const keptChunks = new Set<string>();
  for (const digest of keptIndexes) {
    const path = indexPath(digest);
    const bytes = await readOrStop(store, path, { maxBytes: MAX_INDEX_BYTES, what: "index" });
    for (const c of decodeBlobIndex(bytes, store.describe(path)).chunks) keptChunks.add(c.id);
  }
  for (const file of await store.list("indexes")) {
    const m = /^([0-9a-f]{64})\.caibx$/.exec(file);
    if (file.endsWith(".tmp")) await considerTemp(`indexes/${file}`);
    else if (m && !keptIndexes.has(m[1])) {
      plan.indexes.push(`indexes/${file}`);
      plan.bytes += await sizeOf(`indexes/${file}`);
    }
  }
  for (const folder of ["packs", "profiles"]) {
    for (const file of await store.list(folder)) {
      const m = /^([0-9a-f]{64})\.(pack|profile)$/.exec(file);
      if (file.endsWith(".tmp")) await considerTemp(`${folder}/${file}`);
      else if (m && !keptPacks.has(m[1])) {
        plan.packs.push(`${folder}/${file}`);
        plan.bytes += await sizeOf(`${folder}/${file}`);
      }
    }
  }
  for (const dir of await store.list(CHUNKS_DIR)) {
    for (const file of await store.list(`${CHUNKS_DIR}/${dir}`)) {
      const rel = `${CHUNKS_DIR}/${dir}/${file}`;
      if (file.endsWith(".tmp")) {
        await considerTemp(rel);
        continue;
      }
      const id = file.replace(/\.cacnk$/, "");
      if (!isChunkId(id) || keptChunks.has(id)) continue;
      const st = await store.stat(rel);
      if (st === null) continue; // removed since the listing
      if (now - st.modifiedMs < graceMs) {
        plan.recentKept++;
        continue;
      }
      plan.chunks.push(rel);
      plan.bytes += st.size;
    }
  }
  return plan;

  async function sizeOf(rel: string): Promise<number> {
    return (await store.stat(rel))?.size ?? 0;
  }

  async function considerTemp(rel: string): Promise<void> {
    const st = await store.stat(rel);
    if (st !== null && now - st.modifiedMs >= graceMs) {
      plan.tempFiles.push(rel);
      plan.bytes += st.size;
    }
  }
}

/** Reads a file gc depends on; any failure stops gc, naming the file. */
async function readOrStop(
  store: WritableStore,
  path: string,
  options: ReadOptions,
): Promise<Buffer> {
  try {
    return await store.read(path, options);
  } catch (err) {
    throw new ReleaseError(
      `Cannot gc: ${store.describe(path)} is unreadable (${(err as Error).message}); fix the store first`,
    );
  }
}

/** Carries out a plan: releases first (so nothing points at what goes next), then the rest. */
export async function applyGc(root: string | WritableStore, plan: GcPlan): Promise<void> {
  const store = gcStore(root);
  for (const rel of plan.releases) {
    await store.remove(`${rel}.minisig`);
    await store.remove(rel);
  }
  const catalog = await writeCatalog(store);
  for (const [name, revisions] of Object.entries(catalog.images)) {
    await store.replace(latestPath(name), `${revisions[revisions.length - 1]}\n`);
  }
  for (const rel of [...plan.indexes, ...plan.packs, ...plan.chunks, ...plan.tempFiles]) {
    await store.remove(rel);
  }
}
