import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import {
  ChunkerParamsError,
  createChunker,
  DEFAULT_CHUNKER,
  discriminatorFor,
  parseChunkSize,
  WINDOW_SIZE,
} from "./chunker.ts";
import type { ChunkerParams } from "./chunker.ts";
import { BUZHASH_TABLE } from "./buzhash-table.ts";

/** casync's cut rule, spelt out byte by byte: the reference the fast chunker must match. */
function referenceCuts(data: Buffer, params: ChunkerParams): number[] {
  const d = discriminatorFor(params);
  const rol = (x: number, n: number): number => ((x << n) | (x >>> (32 - n))) >>> 0;
  const cuts: number[] = [];
  for (let s = 0; s < data.length;) {
    let cut = Math.min(data.length, s + params.max);
    let h = 0;
    for (let pos = s; pos < cut; pos++) {
      h = (rol(h, 1) ^ BUZHASH_TABLE[data[pos]]) >>> 0;
      if (pos - s >= WINDOW_SIZE) h = (h ^ rol(BUZHASH_TABLE[data[pos - WINDOW_SIZE]], 16)) >>> 0;
      if (pos + 1 - s >= Math.max(params.min, WINDOW_SIZE) && h % d === d - 1) {
        cut = pos + 1;
        break;
      }
    }
    cuts.push(cut);
    s = cut;
  }
  return cuts;
}

function cutAll(data: Buffer, params = DEFAULT_CHUNKER): number[] {
  const chunker = createChunker(params);
  const cuts: number[] = [];
  for (let s = 0; s < data.length;) {
    s = chunker.findCut(data, s, data.length);
    cuts.push(s);
  }
  return cuts;
}

describe("chunker", () => {
  it("parses MIN:AVG:MAX with K and M suffixes", () => {
    assert.deepEqual(parseChunkSize("16K:64K:256K"), { min: 16384, avg: 65536, max: 262144 });
    assert.deepEqual(parseChunkSize("1M:4M:16M"), { min: 1 << 20, avg: 4 << 20, max: 16 << 20 });
  });

  it("rejects malformed and inconsistent sizes with a message saying what was expected", () => {
    assert.throws(() => parseChunkSize("64K"), { message: /expected MIN:AVG:MAX/ });
    assert.throws(() => parseChunkSize("16K:x:256K"), { message: /"x" is not a number of bytes/ });
    assert.throws(() => parseChunkSize("64K:16K:256K"), ChunkerParamsError);
    assert.throws(() => parseChunkSize("16:64:256"), { message: /expected at least 64/ });
    assert.throws(() => parseChunkSize("1M:4M:64M"), { message: /expected at most/ });
  });

  it("computes casync's discriminator for the default sizes", () => {
    // avg / (-1.42888852e-7 * avg + 1.33237515), truncated, as casync's C does.
    assert.equal(discriminatorFor(DEFAULT_CHUNKER), 49535);
  });

  it("keeps every chunk within [min, max] except the last", () => {
    const data = randomBytes(3 << 20);
    const cuts = cutAll(data);
    let prev = 0;
    for (const [i, cut] of cuts.entries()) {
      const size = cut - prev;
      assert.ok(size <= DEFAULT_CHUNKER.max, `chunk ${i} is ${size} bytes`);
      if (i < cuts.length - 1)
        assert.ok(size >= DEFAULT_CHUNKER.min, `chunk ${i} is ${size} bytes`);
      prev = cut;
    }
    assert.equal(cuts.at(-1), data.length);
    const avg = data.length / cuts.length;
    assert.ok(avg > 40_000 && avg < 110_000, `average chunk ${avg} bytes`);
  });

  it("cuts where casync's rule cuts, for odd and even discriminators and every kind of data", () => {
    // Small chunks so each case has hundreds of cuts; avg 4096 gives discriminator 3074 (even),
    // 1024 gives 768 (2^8 * 3), 777 gives 583 (odd).
    const kinds = [
      randomBytes(600_000),
      Buffer.concat([randomBytes(50_000), Buffer.alloc(70_000), randomBytes(80_000)]),
      Buffer.from("abcabcabd".repeat(40_000)),
    ];
    for (const avg of [777, 1024, 4096]) {
      const params = { min: avg >> 2, avg, max: avg * 4 };
      for (const data of kinds) {
        assert.deepEqual(cutAll(data, params), referenceCuts(data, params), `avg ${avg}`);
      }
    }
  });

  it("cuts zeros at max and resynchronises after an insertion (content-defined)", () => {
    assert.deepEqual(cutAll(Buffer.alloc(1 << 20)), [262144, 524288, 786432, 1048576]);
    const base = randomBytes(2 << 20);
    const shifted = Buffer.concat([randomBytes(1000), base]);
    const a = new Set(cutAll(base).map((c) => c + 1000));
    const b = cutAll(shifted);
    const common = b.filter((c) => a.has(c)).length;
    assert.ok(
      common >= b.length - 3,
      `only ${common} of ${b.length} cut points survived a 1000-byte insertion`,
    );
  });

  it("returns whatever remains as the last chunk, including tiny and empty tails", () => {
    assert.deepEqual(cutAll(Buffer.from("x")), [1]);
    assert.deepEqual(cutAll(Buffer.alloc(0)), []);
    assert.deepEqual(cutAll(randomBytes(16384)), [16384]);
  });
});
