import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import {
  CAIBX_DEFAULT_FLAGS,
  chunksInRange,
  decodeBlobIndex,
  encodeBlobIndex,
  IndexFormatError,
} from "./caibx.ts";
import { DEFAULT_CHUNKER } from "./chunker.ts";
import { CASYNC_MAX_CHUNK_BYTES } from "./limits.ts";

const id = (s: string): string => createHash("sha256").update(s).digest("hex");
const sample = {
  flags: CAIBX_DEFAULT_FLAGS,
  chunker: DEFAULT_CHUNKER,
  chunks: [
    { offset: 0, size: 20000, id: id("a") },
    { offset: 20000, size: 70000, id: id("b") },
    { offset: 90000, size: 5, id: id("c") },
  ],
};

describe("caibx codec", () => {
  it("round-trips and computes the image size", () => {
    const bytes = encodeBlobIndex(sample);
    assert.equal(bytes.length, 48 + 16 + 40 * 4);
    const back = decodeBlobIndex(bytes);
    assert.deepEqual(back, { ...sample, size: 90005 });
  });

  it("encodes an empty image as a header, a table header and a tail", () => {
    const back = decodeBlobIndex(encodeBlobIndex({ ...sample, chunks: [] }));
    assert.equal(back.size, 0);
    assert.deepEqual(back.chunks, []);
  });

  it("names the file and the problem when the index is truncated", () => {
    const bytes = encodeBlobIndex(sample);
    assert.throws(() => decodeBlobIndex(bytes.subarray(0, bytes.length - 7), "x.caibx"), {
      name: "Error",
      message: /Cannot decode x\.caibx: chunk table is \d+ bytes, expected a multiple of 40/,
    });
    assert.throws(
      () => decodeBlobIndex(bytes.subarray(0, bytes.length - 40), "x.caibx"),
      IndexFormatError,
    );
    assert.throws(() => decodeBlobIndex(Buffer.from("hello"), "x.caibx"), {
      message: /expected at least 104/,
    });
  });

  it("refuses corrupt headers, offsets and SHA-512/256 indexes", () => {
    const bytes = encodeBlobIndex(sample);
    const badType = Buffer.from(bytes);
    badType[8] ^= 1;
    assert.throws(() => decodeBlobIndex(badType, "i"), { message: /not a \.caibx/ });
    const backwards = Buffer.from(bytes);
    backwards.writeBigUInt64LE(10n, 64 + 40); // second chunk ends before the first
    assert.throws(() => decodeBlobIndex(backwards, "i"), { message: /chunk 1 ends at 10/ });
    const sha512 = Buffer.from(bytes);
    sha512.writeBigUInt64LE(0x2000000000000000n, 16);
    assert.throws(() => decodeBlobIndex(sha512, "i"), { message: /SHA-512\/256/ });
  });

  it("refuses a chunk longer than the index's maximum chunk size (a 2 GiB chunk)", () => {
    const big = { ...sample, chunks: [{ offset: 0, size: 2 * 1024 ** 3, id: id("big") }] };
    assert.throws(() => decodeBlobIndex(encodeBlobIndex(big), "big.caibx"), {
      name: "Error",
      code: "ERR_INDEX_FORMAT",
      message:
        "Cannot decode big.caibx: chunk 0 is 2147483648 bytes, larger than the index's maximum chunk size 262144",
    });
    // One byte over the maximum is refused; the maximum itself is fine.
    const edge = (size: number): unknown =>
      decodeBlobIndex(encodeBlobIndex({ ...sample, chunks: [{ offset: 0, size, id: id("e") }] }));
    assert.throws(() => edge(DEFAULT_CHUNKER.max + 1), IndexFormatError);
    assert.equal((edge(DEFAULT_CHUNKER.max) as { size: number }).size, DEFAULT_CHUNKER.max);
  });

  it("refuses a declared maximum chunk size above casync's 128 MiB (a 1 TiB chunk)", () => {
    const tib = 1024 ** 4;
    const huge = {
      ...sample,
      chunker: { min: 16384, avg: 65536, max: tib },
      chunks: [{ offset: 0, size: tib, id: id("huge") }],
    };
    assert.throws(() => decodeBlobIndex(encodeBlobIndex(huge), "huge.caibx"), {
      message: `Cannot decode huge.caibx: maximum chunk size is ${tib}, expected 1 to ${CASYNC_MAX_CHUNK_BYTES} (casync's limit)`,
    });
    const atLimit = { ...huge, chunker: { ...huge.chunker, max: CASYNC_MAX_CHUNK_BYTES } };
    assert.throws(() => decodeBlobIndex(encodeBlobIndex(atLimit)), /chunk 0 is 1099511627776/);
    const zero = { ...sample, chunker: { min: 0, avg: 0, max: 0 } };
    assert.throws(() => decodeBlobIndex(encodeBlobIndex(zero)), /maximum chunk size is 0/);
  });

  it("finds the chunks a byte range touches, clipped to the image", () => {
    const index = decodeBlobIndex(encodeBlobIndex(sample));
    const ids = (o: number, l: number): string[] => chunksInRange(index, o, l).map((c) => c.id);
    assert.deepEqual(ids(0, 1), [id("a")]);
    assert.deepEqual(ids(19_999, 2), [id("a"), id("b")]);
    assert.deepEqual(ids(50_000, 1_000_000), [id("b"), id("c")]);
    assert.deepEqual(ids(90_004, 1), [id("c")]);
    assert.deepEqual(ids(90_005, 10), []);
    assert.deepEqual(ids(100, 0), []);
  });
});
