import assert from "node:assert/strict";
import { it } from "node:test";
import { alignedRegions, isWholeChunk, planBootSet } from "./boot-set.ts";
import type { BlobIndex } from "./caibx.ts";
import { zeroChunkId } from "./chunks.ts";

const KiB = 1024;

/** Chunks of the given sizes back to back; ids "a…", "b…" unless given. */
function index(sizes: number[], ids: (string | null)[] = []): BlobIndex {
  let offset = 0;
  const chunks = sizes.map((size, i) => {
    const c = { offset, size, id: ids[i] ?? String.fromCharCode(97 + i).repeat(64) };
    offset += size;
    return c;
  });
  return { flags: 0n, chunker: { min: 1, avg: 2, max: 3 }, chunks, size: offset };
}

it("boot set: regions widen to the 4 KiB grain and merge, clipped to the image", () => {
  assert.deepEqual(
    alignedRegions(
      [
        { offset: 5000, length: 10, ms: 0 },
        { offset: 0, length: 1, ms: 1 },
        { offset: 8192, length: 100, ms: 2 },
        { offset: 30_000, length: 0, ms: 3 },
        { offset: 20_000, length: 5000, ms: 4 },
      ],
      24_000,
    ),
    [
      { offset: 0, end: 12_288 },
      { offset: 16_384, end: 24_000 },
    ],
  );
});

it("boot set: chunks read mostly go in whole, others as pieces, in first-access order", () => {
  // a: 64 KiB read whole; b: 64 KiB of which 8 KiB read; c: zeros; d: 16 KiB, 12 read (75%).
  const idx = index([64 * KiB, 64 * KiB, 32 * KiB, 16 * KiB], [null, null, zeroChunkId(32 * KiB)]);
  const parts = planBootSet(idx, [
    { offset: 64 * KiB + 40 * KiB + 100, length: 4000, ms: 0 }, // b, one 4 KiB-grain piece…
    { offset: 160 * KiB, length: 12 * KiB, ms: 1 }, // d: 75% read
    { offset: 0, length: 64 * KiB, ms: 2 }, // a, whole
    { offset: 64 * KiB, length: 4 * KiB, ms: 3 }, // b, its first 4 KiB
    { offset: 128 * KiB, length: 32 * KiB, ms: 4 }, // c: zeros, never packed
    { offset: 20 * KiB, length: 4 * KiB, ms: 5 }, // a again: nothing new
  ]);
  assert.deepEqual(
    parts.map((p) => [p.chunk.id[0], p.offset, p.size, isWholeChunk(p)]),
    [
      ["b", 104 * KiB, 8 * KiB, false], // 40 KiB + 100 .. + 4000 spans two 4 KiB blocks
      ["d", 160 * KiB, 16 * KiB, true],
      ["a", 0, 64 * KiB, true],
      ["b", 64 * KiB, 4 * KiB, false],
    ],
  );
});

it("boot set: pieces stop at chunk ends; a chunk at two places goes in whole once", () => {
  const same = "e".repeat(64);
  const idx = index([10_000, 50_000, 10_000], [same, null, same]);
  const parts = planBootSet(idx, [
    { offset: 8000, length: 4000, ms: 0 }, // across the end of the first chunk
    { offset: 60_000, length: 10_000, ms: 1 }, // the last chunk, whole (same id as the first)
  ]);
  assert.deepEqual(
    parts.map((p) => [p.offset, p.size, isWholeChunk(p)]),
    [
      [4096, 10_000 - 4096, false],
      [10_000, 12_288 - 10_000, false],
      [60_000, 10_000, true],
    ],
  );
  // The first chunk read whole, and again at its second place: one entry.
  const twice = planBootSet(idx, [
    { offset: 0, length: 10_000, ms: 0 },
    { offset: 60_000, length: 10_000, ms: 1 },
  ]);
  assert.deepEqual(
    twice.map((p) => [p.offset, isWholeChunk(p)]),
    [[0, true]],
  );
});
