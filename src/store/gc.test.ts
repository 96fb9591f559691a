import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CAIBX_DEFAULT_FLAGS, encodeBlobIndex } from "./caibx.ts";
import { sha256Hex } from "./chunks.ts";
import { DEFAULT_CHUNKER } from "./chunker.ts";
import { ReleaseError } from "./errors.ts";
import { applyGc, DEFAULT_GC_GRACE_SECONDS, planGc } from "./gc.ts";
import { CATALOG_PATH, chunkFile, indexPath, latestPath, releasePath } from "./layout.ts";
import { NotFoundError } from "./errors.ts";
import { encodeRelease, RELEASE_FORMAT } from "./release.ts";
import type { StoreFileInfo, WritableStore } from "./store.ts";

const HOUR = 3600 * 1000;

/** A writable store in memory whose files carry a settable age. */
class MemoryStore implements WritableStore {
  readonly location = "memory:/";
  readonly files = new Map<string, { data: Buffer; modifiedMs: number }>();

  put(path: string, data: Uint8Array | string, ageMs = 10 * HOUR): void {
    this.files.set(path, { data: Buffer.from(data), modifiedMs: Date.now() - ageMs });
  }
  read(path: string): Promise<Buffer> {
    const f = this.files.get(path);
    return f ? Promise.resolve(f.data) : Promise.reject(new NotFoundError(path));
  }
  size(path: string): Promise<number | null> {
    return Promise.resolve(this.files.get(path)?.data.length ?? null);
  }
  readRange(): AsyncIterable<Buffer> {
    throw new Error("not used by gc");
  }
  describe(path: string): string {
    return this.location + path;
  }
  async close(): Promise<void> {}
  create(path: string, data: Uint8Array | string): Promise<boolean> {
    if (this.files.has(path)) return Promise.resolve(false);
    this.put(path, data, 0);
    return Promise.resolve(true);
  }
  replace(path: string, data: Uint8Array | string): Promise<void> {
    this.put(path, data, 0);
    return Promise.resolve();
  }
  list(folder: string): Promise<string[]> {
    const names = new Set<string>();
    for (const path of this.files.keys()) {
      if (path.startsWith(`${folder}/`)) names.add(path.slice(folder.length + 1).split("/")[0]);
    }
    return Promise.resolve([...names]);
  }
  stat(path: string): Promise<StoreFileInfo | null> {
    const f = this.files.get(path);
    return Promise.resolve(f ? { size: f.data.length, modifiedMs: f.modifiedMs } : null);
  }
  remove(path: string): Promise<void> {
    this.files.delete(path);
    return Promise.resolve();
  }
}

const id = (n: number): string => sha256Hex(Buffer.from(`chunk ${n}`));
const chunkPath = (n: number): string => `chunks/${chunkFile(id(n))}`;

/** Adds revision `revision` of `name` made of chunks `ids` (each stored as a 100-byte file). */
function addRelease(
  store: MemoryStore,
  name: string,
  revision: number,
  ids: number[],
  extra: { profile?: string } = {},
): string {
  const chunks = ids.map((n, i) => ({ offset: i * 100, size: 100, id: id(n) }));
  const index = encodeBlobIndex({ flags: CAIBX_DEFAULT_FLAGS, chunker: DEFAULT_CHUNKER, chunks });
  const digest = sha256Hex(index);
  store.put(indexPath(digest), index);
  for (const n of ids) store.put(chunkPath(n), Buffer.alloc(100, n));
  const release = encodeRelease({
    format: RELEASE_FORMAT,
    name,
    revision,
    created: new Date(0).toISOString(),
    size: chunks.length * 100,
    index: digest,
    chunks: chunks.length,
    chunker: DEFAULT_CHUNKER,
    compression: "zstd",
    parent: null,
    profile: extra.profile ?? null,
    pack: null,
    keyId: null,
  });
  store.put(releasePath(name, revision), release);
  store.put(`${releasePath(name, revision)}.minisig`, "sig");
  store.put(latestPath(name), `${revision}\n`);
  return digest;
}

describe("gc", () => {
  it("keeps everything every release uses when no --keep is given", async () => {
    const store = new MemoryStore();
    addRelease(store, "a", 1, [1, 2]);
    addRelease(store, "a", 2, [2, 3]);
    const plan = await planGc(store);
    assert.deepEqual(plan.releases, []);
    assert.deepEqual(plan.chunks, []);
    assert.deepEqual(plan.indexes, []);
    assert.equal(plan.keptReleases, 2);
    assert.equal(plan.bytes, 0);
  });

  it("plans the releases beyond --keep and what only they use, with their bytes", async () => {
    const store = new MemoryStore();
    const old = addRelease(store, "a", 1, [1, 2]);
    addRelease(store, "a", 2, [2, 3]);
    addRelease(store, "b", 1, [4]);
    const plan = await planGc(store, { keep: 1 });
    assert.deepEqual(plan.releases, [releasePath("a", 1)]);
    assert.deepEqual(plan.indexes, [indexPath(old)]);
    assert.deepEqual(plan.chunks, [chunkPath(1)]);
    assert.equal(plan.keptReleases, 2);
    assert.equal(plan.bytes, store.files.get(indexPath(old))!.data.length + 100);
  });

  it("keeps unreferenced chunks younger than the grace period, and old temp files go", async () => {
    const store = new MemoryStore();
    addRelease(store, "a", 1, [1]);
    store.put(chunkPath(7), Buffer.alloc(50), 60 * 1000); // written a minute ago
    store.put(chunkPath(8), Buffer.alloc(60), DEFAULT_GC_GRACE_SECONDS * 1000 + HOUR);
    store.put(`${chunkPath(9)}.123.abcd.tmp`, Buffer.alloc(5), 2 * HOUR);
    store.put(`${chunkPath(9)}.456.abcd.tmp`, Buffer.alloc(5), 60 * 1000);
    store.put("chunks/zzzz/not-a-chunk.txt", "left alone");
    const plan = await planGc(store);
    assert.deepEqual(plan.chunks, [chunkPath(8)]);
    assert.equal(plan.recentKept, 1);
    assert.deepEqual(plan.tempFiles, [`${chunkPath(9)}.123.abcd.tmp`]);
    assert.equal(plan.bytes, 60 + 5);
    const shorter = await planGc(store, { graceSeconds: 1 });
    assert.deepEqual(shorter.chunks.sort(), [chunkPath(7), chunkPath(8)].sort());
  });

  it("keeps the boot profiles kept releases name and plans the rest", async () => {
    const store = new MemoryStore();
    const kept = "a".repeat(64);
    const orphan = "b".repeat(64);
    addRelease(store, "a", 1, [1], { profile: kept });
    store.put(`profiles/${kept}.profile`, "p");
    store.put(`profiles/${orphan}.profile`, "pp");
    store.put(`packs/${orphan}.pack`, "ppp");
    const plan = await planGc(store);
    assert.deepEqual(plan.packs.sort(), [`packs/${orphan}.pack`, `profiles/${orphan}.profile`]);
    assert.equal(plan.bytes, 5);
  });

  it("refuses a --keep that is not a whole number of at least 1", async () => {
    const store = new MemoryStore();
    for (const keep of [0, -1, 1.5]) {
      await assert.rejects(planGc(store, { keep }), (err: Error) => {
        assert.ok(err instanceof ReleaseError);
        assert.match(err.message, new RegExp(`--keep ${keep} is not valid`));
        return true;
      });
    }
  });

  it("stops, naming the file, when a kept release or its index cannot be read", async () => {
    const store = new MemoryStore();
    const digest = addRelease(store, "a", 1, [1]);
    store.files.delete(indexPath(digest));
    await assert.rejects(
      planGc(store),
      /Cannot gc: memory:\/indexes\/[0-9a-f]{64}\.caibx is unreadable/,
    );
    store.put(releasePath("a", 1), "{ not json");
    await assert.rejects(planGc(store), ReleaseError);
  });

  it("applies a plan: releases and signatures first, then latest and the catalog, then files", async () => {
    const store = new MemoryStore();
    addRelease(store, "a", 1, [1, 2]);
    addRelease(store, "a", 2, [2]);
    store.put(latestPath("a"), "1\n"); // stale pointer: rewritten from what is left
    const plan = await planGc(store, { keep: 1 });
    await applyGc(store, plan);
    assert.ok(!store.files.has(releasePath("a", 1)));
    assert.ok(!store.files.has(`${releasePath("a", 1)}.minisig`));
    assert.ok(store.files.has(releasePath("a", 2)));
    assert.ok(!store.files.has(chunkPath(1)));
    assert.ok(store.files.has(chunkPath(2)));
    assert.equal(store.files.get(latestPath("a"))!.data.toString(), "2\n");
    assert.deepEqual(JSON.parse(store.files.get(CATALOG_PATH)!.data.toString()), {
      images: { a: [2] },
    });
    const again = await planGc(store, { keep: 1 });
    assert.equal(again.bytes, 0, "nothing left to remove");
  });
});
