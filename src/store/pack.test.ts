import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { packImage } from "./pack.ts";

/** Every chunk file under a store's chunks/ folder. */
function chunkFiles(store: string): string[] {
  const root = join(store, "chunks");
  return readdirSync(root)
    .flatMap((d) => readdirSync(join(root, d)))
    .sort();
}

it("pack: the main thread alone and with worker threads store the same chunks and index", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "inetboot-pack-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Several 1 MiB batches: random data, zeros, and a repeat of the first part.
  const head = randomBytes(3 * 1024 * 1024);
  const image = join(dir, "disk.img");
  writeFileSync(image, Buffer.concat([head, Buffer.alloc(2 * 1024 * 1024), head]));
  const packs = [];
  for (const workers of [1, 3]) {
    const store = join(dir, `store-${workers}`);
    packs.push({ store, summary: await packImage(image, { store, name: "disk", workers }) });
  }
  const [alone, threads] = packs;
  assert.equal(threads.summary.indexDigest, alone.summary.indexDigest);
  assert.deepEqual(chunkFiles(threads.store), chunkFiles(alone.store));
  for (const key of ["chunks", "newChunks", "reusedChunks", "zeroChunks"] as const)
    assert.equal(threads.summary[key], alone.summary[key], key);
  assert.ok(alone.summary.reusedChunks > 0, "the repeat reuses chunks");
});
