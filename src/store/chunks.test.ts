// A chunk's frame is decompressed no further than the size its index names: a zstd bomb is
// refused as corrupt, with memory bounded by the chunk size, never by what the frame expands to.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { zstdCompressSync } from "node:zlib";
import { sha256Hex, verifyChunk } from "./chunks.ts";
import { ChunkCorruptError } from "./errors.ts";
import { CASYNC_MAX_CHUNK_BYTES, maxFrameBytes } from "./limits.ts";

const MB = 1024 ** 2;

/** 1 GiB of zeros as 16 concatenated zstd frames (a few KiB in all): a decompression bomb. */
function gibBomb(): Buffer {
  const frame = zstdCompressSync(Buffer.alloc(64 * MB));
  return Buffer.concat(Array.from({ length: 16 }, () => frame));
}

/** Peak RSS growth while `fn` runs. */
async function rssGrowth(fn: () => Promise<unknown>): Promise<number> {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 2);
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, process.memoryUsage().rss) - before;
}

describe("chunk decompression is bounded", () => {
  const bomb = gibBomb();

  it("a frame expanding past its 64 KiB chunk is refused as corrupt, not inflated", async (t) => {
    assert.ok(bomb.length < 64 * 1024, `the bomb is ${bomb.length} bytes`);
    const chunk = { id: "c".repeat(64), size: 65536 };
    const growth = await rssGrowth(() =>
      assert.rejects(verifyChunk(bomb, chunk, "bomb.cacnk"), {
        code: "ERR_CHUNK_CORRUPT",
        message: `Chunk ${"c".repeat(64)} is corrupt (larger than the index says): bomb.cacnk`,
      }),
    );
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB`);
    assert.ok(growth < 32 * MB, `RSS grew ${(growth / MB).toFixed(0)} MB`);
  });

  it("a chunk said to be 2 GiB is refused before a buffer of its size is made", async (t) => {
    const chunk = { id: "d".repeat(64), size: 2 * 1024 ** 3 };
    const growth = await rssGrowth(() =>
      assert.rejects(verifyChunk(bomb, chunk, "two-gib.cacnk"), (err: Error) => {
        assert.ok(err instanceof ChunkCorruptError);
        assert.match(
          err.message,
          new RegExp(`over the ${CASYNC_MAX_CHUNK_BYTES}-byte chunk limit`),
        );
        return true;
      }),
    );
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB`);
    assert.ok(growth < 32 * MB, `RSS grew ${(growth / MB).toFixed(0)} MB`);
  });

  it("a frame larger than zstd's compress bound of its chunk is refused unread", async () => {
    const data = Buffer.from("x".repeat(1000));
    const frame = zstdCompressSync(data);
    const chunk = { id: sha256Hex(data), size: data.length };
    assert.ok((await verifyChunk(frame, chunk, "ok")).equals(data));
    const padded = Buffer.concat([frame, Buffer.alloc(maxFrameBytes(data.length))]);
    await assert.rejects(verifyChunk(padded, chunk, "padded"), {
      message: new RegExp(`a ${padded.length}-byte frame cannot hold 1000 bytes`),
    });
  });
});
