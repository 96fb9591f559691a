import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { it } from "node:test";
import type { PackEntry } from "../store/boot-pack.ts";
import type { BlobIndex } from "../store/caibx.ts";
import { sha256Hex } from "../store/chunks.ts";
import type { BlockDevice } from "./block-device.ts";
import { BufferDevice } from "./buffer-device.ts";
import type { ChunkFetcher, ChunkRef } from "./chunk-fetcher.ts";
import { PieceDevice } from "./piece-device.ts";

const data = randomBytes(256 * 1024);
// One 256 KiB chunk; two pieces of it, and the chunk itself placed as a whole entry (passes).
const index = {
  chunks: [{ id: sha256Hex(data), offset: 0, size: data.length }],
  size: data.length,
} as BlobIndex;
const piece = (at: number, size: number): PackEntry => ({
  id: sha256Hex(data.subarray(at, at + size)),
  offset: 0,
  length: 0,
  size,
  at,
});
const entries = [piece(8192, 4096), piece(65536, 20_000)];

/** Pieces by id; counts fetches; `broken` ids fail. */
class Pieces implements ChunkFetcher {
  fetched = 0;
  readonly broken = new Set<string>();
  fetch(ref: ChunkRef): Promise<Buffer> {
    this.fetched++;
    if (this.broken.has(ref.id)) return Promise.reject(new Error("not delivered"));
    const e = entries.find((x) => x.id === ref.id)!;
    return Promise.resolve(Buffer.from(data.subarray(e.at!, e.at! + e.size)));
  }
  async close(): Promise<void> {}
}

/** The image below, counting the bytes read from it. */
class Counted extends BufferDevice {
  bytes = 0;
  override read(offset: number, length: number): Promise<Buffer> {
    this.bytes += length;
    return super.read(offset, length);
  }
}

async function check(dev: BlockDevice, offset: number, length: number): Promise<void> {
  assert.ok((await dev.read(offset, length)).equals(data.subarray(offset, offset + length)));
}

it("piece device: reads on pieces come from them, the rest from the image, stitched", async () => {
  const below = new Counted(data);
  const fetcher = new Pieces();
  const dev = new PieceDevice(below, index, Promise.resolve(entries), fetcher);
  await check(dev, 8192, 4096); // exactly a piece
  await check(dev, 70_000, 1000); // inside the second
  assert.equal(below.bytes, 0, "nothing read below");
  assert.equal(dev.stats.pieceReads, 2);
  await check(dev, 0, data.length); // across both, and the gaps between
  await check(dev, 12_000, 60_000); // the end of one piece to inside the next
  assert.equal(fetcher.fetched, 2, "each piece fetched once (kept in memory)");
  assert.deepEqual(await dev.pieceIds(), [entries[0].id, entries[1].id]);
  await dev.close();
});

it("piece device: a piece that cannot be had is dropped and read from the image", async () => {
  const below = new Counted(data);
  const fetcher = new Pieces();
  fetcher.broken.add(entries[1].id);
  const dev = new PieceDevice(below, index, Promise.resolve(entries), fetcher);
  await check(dev, 60_000, 40_000);
  await check(dev, 65_536, 100);
  assert.equal(dev.stats.dropped, 1);
  assert.equal(fetcher.fetched, 1, "not asked again once dropped");
  assert.ok(below.bytes >= 40_100);
});

it("piece device: reads do not wait long for a table that is late", async () => {
  const below = new Counted(data);
  let arrive!: (e: readonly PackEntry[]) => void;
  const late = new Promise<readonly PackEntry[]>((r) => (arrive = r));
  const dev = new PieceDevice(below, index, late, new Pieces(), { tableWaitMs: 50 });
  const started = Date.now();
  await check(dev, 8192, 4096);
  assert.ok(Date.now() - started < 2000);
  assert.equal(below.bytes, 4096, "read from the image meanwhile");
  arrive(entries);
  await dev.pieceIds();
  await check(dev, 8192, 4096);
  assert.equal(dev.stats.pieceReads, 1, "from the piece once the table is known");
  assert.equal(below.bytes, 4096);
});
