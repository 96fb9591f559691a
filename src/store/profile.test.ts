import assert from "node:assert/strict";
import { it } from "node:test";
import type { BlobIndex } from "./caibx.ts";
import { zeroChunkId } from "./chunks.ts";
import { regionDataBytes } from "./profile.ts";

it("profile: the bytes of regions in chunks with data (overlaps once, zero chunks never)", () => {
  // 10 000 bytes of data, 20 000 of zeros, 5 000 of data.
  const chunks = [
    { offset: 0, size: 10_000, id: "a".repeat(64) },
    { offset: 10_000, size: 20_000, id: zeroChunkId(20_000) },
    { offset: 30_000, size: 5000, id: "b".repeat(64) },
  ];
  const index = { chunks, size: 35_000 } as BlobIndex;
  const r = (offset: number, length: number): { offset: number; length: number; ms: number } => ({
    offset,
    length,
    ms: 0,
  });
  assert.equal(regionDataBytes(index, []), 0);
  assert.equal(regionDataBytes(index, [r(0, 35_000)]), 15_000);
  // Overlapping regions count once; a region inside another adds nothing; empty ones nothing.
  assert.equal(regionDataBytes(index, [r(9000, 2000), r(5000, 5000), r(6000, 100), r(0, 0)]), 5000);
  // Across the zero chunk into the last one, and past the image's end.
  assert.equal(regionDataBytes(index, [r(29_000, 10_000)]), 5000);
});
