import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  decodePackTable,
  encodePack,
  MAX_PLACED_ENTRIES,
  packTableBytes,
  tableBytes,
} from "./boot-pack.ts";
import type { PackEntry } from "./boot-pack.ts";
import { sha256Hex } from "./chunks.ts";
import { decodeRelease, encodeRelease, RELEASE_FORMAT } from "./release.ts";
import type { Release } from "./release.ts";

const release: Release = {
  format: RELEASE_FORMAT,
  name: "disk",
  revision: 2,
  created: "2026-11-22T10:00:00.000Z",
  size: 1 << 20,
  index: "a".repeat(64),
  chunks: 16,
  chunker: { min: 8192, avg: 32768, max: 131072 },
  compression: "zstd",
  parent: { revision: 1, digest: "b".repeat(64) },
  profile: null,
  pack: null,
  keyId: null,
};

function frames(): { chunk: { id: string; offset: number; size: number }; frame: Buffer }[] {
  return [10, 300, 7].map((n, i) => {
    const frame = Buffer.alloc(n, i + 1);
    return { chunk: { id: sha256Hex(frame), offset: i * 4096, size: 4096 }, frame };
  });
}

describe("boot pack format", () => {
  it("round-trips its table; offsets follow the table", () => {
    const { bytes, info, entries } = encodePack(frames());
    assert.equal(info.size, bytes.length);
    assert.equal(info.digest, sha256Hex(bytes));
    const table = bytes.subarray(0, tableBytes(3));
    assert.deepEqual(decodePackTable(table, info, "p"), entries);
    assert.equal(entries[0].offset, tableBytes(3));
    assert.equal(entries[2].offset, tableBytes(3) + 310);
    for (const e of entries) {
      const f = frames().find((x) => x.chunk.id === e.id)!;
      assert.ok(bytes.subarray(e.offset, e.offset + e.length).equals(f.frame));
    }
  });

  it("refuses a table that does not match the signed digest, or lies about its layout", () => {
    const { bytes, info } = encodePack(frames());
    const table = Buffer.from(bytes.subarray(0, tableBytes(3)));
    table[20] ^= 1;
    assert.throws(() => decodePackTable(table, info, "p"), /does not match the digest/);
    assert.throws(() => decodePackTable(bytes.subarray(0, 20), info, "p"), /table is 20 bytes/);
    // A consistent digest over a table whose offsets overlap is still refused.
    const lying = Buffer.from(bytes.subarray(0, tableBytes(3)));
    lying.writeBigUInt64LE(BigInt(tableBytes(3)), 16 + 48 + 32);
    assert.throws(
      () => decodePackTable(lying, { ...info, table: sha256Hex(lying) }, "p"),
      /out of place/,
    );
  });

  it("refuses a table entry whose frame or chunk is larger than a chunk can be", () => {
    const { bytes, info } = encodePack(frames());
    const table = Buffer.from(bytes.subarray(0, tableBytes(3)));
    table.writeUInt32LE(2 ** 31, 16 + 48 + 44); // the second entry claims a 2 GiB chunk
    assert.throws(
      () => decodePackTable(table, { ...info, table: sha256Hex(table) }, "p"),
      /entry 1 is a 300-byte frame for a 2147483648-byte chunk, more than it can be/,
    );
  });

  it("refuses a release whose pack holds more chunks than the image", () => {
    const { info } = encodePack(frames());
    const withPack = {
      ...release,
      profile: "c".repeat(64),
      pack: { ...info, chunks: 17, size: tableBytes(17) + 317 },
    };
    assert.throws(
      () => decodeRelease(encodeRelease(withPack), "x"),
      /pack holds 17 chunks, more than the image's 16/,
    );
  });

  it("releases carry an optional pack; older releases without the field read as null", () => {
    const old = JSON.parse(encodeRelease(release).toString()) as Record<string, unknown>;
    delete old.pack;
    assert.equal(decodeRelease(Buffer.from(JSON.stringify(old)), "old").pack, null);
    const { info } = encodePack(frames());
    const withPack = { ...release, profile: "c".repeat(64), pack: info };
    assert.deepEqual(decodeRelease(encodeRelease(withPack), "new").pack, info);
    assert.throws(
      () => decodeRelease(encodeRelease({ ...release, pack: info }), "x"),
      /must name its profile/,
    );
    assert.throws(
      () => decodeRelease(encodeRelease({ ...withPack, pack: { ...info, digest: "nope" } }), "x"),
      /pack must be null/,
    );
  });

  it("format 2 places entries in the image: round trip, and no entry outside it or overlapping", () => {
    const placed = frames().map((f, i) => ({ ...f, chunk: { ...f.chunk, offset: i * 8192 } }));
    const { bytes, info, entries } = encodePack(placed, 2);
    assert.equal(info.format, 2);
    const table = bytes.subarray(0, packTableBytes(info));
    assert.equal(table.length, tableBytes(3, 2));
    assert.deepEqual(decodePackTable(table, info, "p", 3 * 8192), entries);
    assert.deepEqual(
      entries.map((e) => e.at),
      [0, 8192, 16384],
    );
    // The image is smaller than the last entry's end.
    assert.throws(() => decodePackTable(table, info, "p", 16384 + 4095), /not inside the image/);
    // Two entries over the same bytes (signed consistently: the layout itself is refused).
    const overlapping = encodePack(
      placed.map((f, i) => ({
        ...f,
        chunk: { ...f.chunk, offset: i === 2 ? 6000 : f.chunk.offset },
      })),
      2,
    );
    assert.throws(
      () =>
        decodePackTable(
          overlapping.bytes.subarray(0, packTableBytes(overlapping.info)),
          overlapping.info,
          "p",
        ),
      /entries at 6000 and 8192 overlap/,
    );
    // A format 1 reader's view of a format 2 table (and the other way round) is refused.
    assert.throws(
      () => decodePackTable(table, { ...info, format: undefined }, "p"),
      /table is \d+ bytes, expected/,
    );
    // The release bounds the entries by what the image can have; format is 2 or absent.
    const withPack = { ...release, profile: "c".repeat(64), pack: info };
    assert.deepEqual(decodeRelease(encodeRelease(withPack), "v2").pack, info);
    const tooMany = { ...info, chunks: 2 * 16 + 256 + 1, size: tableBytes(2 * 16 + 257, 2) };
    assert.throws(
      () => decodeRelease(encodeRelease({ ...withPack, pack: tooMany }), "x"),
      /pack holds 289 entries, more than an image of 16 chunks and 1048576 bytes can have/,
    );
    // However large the image, a format 2 table is at most MAX_PLACED_ENTRIES entries.
    const huge = { ...withPack, size: 2 ** 50, chunks: 2 ** 34 };
    const most = { ...info, chunks: MAX_PLACED_ENTRIES, size: tableBytes(MAX_PLACED_ENTRIES, 2) };
    assert.equal(
      decodeRelease(encodeRelease({ ...huge, pack: most }), "v2").pack?.chunks,
      most.chunks,
    );
    assert.throws(
      () =>
        decodeRelease(
          encodeRelease({
            ...huge,
            pack: { ...most, chunks: most.chunks + 1, size: tableBytes(most.chunks + 1, 2) },
          }),
          "x",
        ),
      /pack holds 1048577 entries, more than an image of/,
    );
    assert.throws(
      () =>
        decodeRelease(
          encodeRelease({ ...withPack, pack: { ...info, format: 3 as unknown as 2 } }),
          "x",
        ),
      /pack must be null/,
    );
  });

  it("fuzz: a damaged format 2 table (re-signed) is refused or yields entries that fit", () => {
    const placed = [10, 300, 7, 50].map((n, i) => {
      const frame = Buffer.alloc(n, i + 1);
      return { chunk: { id: sha256Hex(frame), offset: i * 4096, size: 4096 }, frame };
    });
    const { bytes, info } = encodePack(placed, 2);
    const imageSize = 5 * 4096;
    const table = bytes.subarray(0, packTableBytes(info));
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(table.length - 1), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
        (flips) => {
          const damaged = Buffer.from(table);
          for (const [at, x] of flips) damaged[at] ^= x;
          let entries: PackEntry[];
          try {
            entries = decodePackTable(
              damaged,
              { ...info, table: sha256Hex(damaged) },
              "p",
              imageSize,
            );
          } catch (err) {
            assert.match((err as Error).message, /^Boot pack p: /);
            return;
          }
          let end = table.length;
          for (const e of entries) {
            assert.equal(e.offset, end, "frames back to back");
            end += e.length;
            assert.ok(e.at !== null && e.at + e.size <= imageSize && e.size > 0);
          }
          assert.equal(end, info.size);
          const sorted = [...entries].sort((a, b) => a.at! - b.at!);
          for (let i = 1; i < sorted.length; i++)
            assert.ok(sorted[i - 1].at! + sorted[i - 1].size <= sorted[i].at!, "no overlap");
        },
      ),
      { numRuns: 2000 },
    );
  });
});
