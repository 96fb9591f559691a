import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodePackTable, encodePack, tableBytes } from "./boot-pack.ts";
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
});
