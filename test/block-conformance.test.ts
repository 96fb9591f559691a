// One conformance suite, run against every block backend and layer (like hono's shared router
// suite): the same reads, writes and extent queries must give the same answers everywhere.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { OutOfRangeError } from "../src/block/block-device.ts";
import type { BlockDevice } from "../src/block/block-device.ts";
import { ChunkCache, openChunkCache } from "../src/block/chunk-cache.ts";
import { StoreChunkFetcher } from "../src/block/chunk-fetcher.ts";
import type { ChunkFetcher } from "../src/block/chunk-fetcher.ts";
import { ChunkedDevice } from "../src/block/chunked-device.ts";
import { CowDevice } from "../src/block/cow-device.ts";
import { FileDevice } from "../src/block/file-device.ts";
import { HttpDevice } from "../src/block/http-device.ts";
import { MirrorSet } from "../src/block/mirror-set.ts";
import { openDeviceStack } from "../src/block/open-stack.ts";
import { PrefetchDevice } from "../src/block/prefetch-device.ts";
import { RangeCacheDevice } from "../src/block/range-cache-device.ts";
import { BorrowedDevice } from "../src/block/borrowed-device.ts";
import { TraceDevice } from "../src/block/trace-device.ts";
import { UnpackedDevice } from "../src/block/unpacked-device.ts";
import { isZeroChunk } from "../src/store/chunks.ts";
import { optimizeRelease } from "../src/store/optimize.ts";
import { encodeProfile } from "../src/store/profile.ts";
import { packImage } from "../src/store/pack.ts";
import { openImage } from "../src/store/source.ts";
import { openStore } from "../src/store/open-store.ts";
import { tempDir, textLike } from "./helpers.ts";
import { startNginx, startNginxProcess } from "./nginx.ts";

interface Fixture {
  dir: string;
  data: Buffer;
  image: string;
  store: string;
}

async function fixture(t: TestContext): Promise<Fixture> {
  const dir = tempDir(t);
  // Text, zeros (whole zero chunks and a short run), random; not a multiple of 4096.
  const data = Buffer.concat([
    textLike(700_000, 2),
    Buffer.alloc(1_100_000),
    randomBytes(333_333),
    Buffer.alloc(5000),
    textLike(200_001, 3),
  ]);
  const image = join(dir, "disk.img");
  writeFileSync(image, data);
  const store = join(dir, "store");
  await packImage(image, { store, name: "disk", workers: 1 });
  return { dir, data, image, store };
}

async function chunked(
  f: Fixture,
  layer?: (fetch: StoreChunkFetcher) => ChunkFetcher,
): Promise<ChunkedDevice> {
  const image = await openImage("disk", {
    store: f.store,
    policy: { trusted: [], insecure: true, statePath: null },
  });
  const fetcher = new StoreChunkFetcher(image.chunks);
  return new ChunkedDevice(image.index, layer ? layer(fetcher) : fetcher);
}

type Factory = (t: TestContext, f: Fixture) => Promise<BlockDevice | null>;

const factories: [string, Factory][] = [
  ["file", (_t, f) => FileDevice.open(f.image)],
  ["chunked image", (_t, f) => chunked(f)],
  [
    "chunked image + disk cache",
    (_t, f) =>
      chunked(f, (next) =>
        openChunkCache(join(f.dir, "cache"), { quotaBytes: 1 << 30 }).layer(next),
      ),
  ],
  [
    "chunked image + mirror set",
    async (_t, f) => {
      const image = await openImage("disk", {
        store: f.store,
        policy: { trusted: [], insecure: true, statePath: null },
      });
      const mirrors = new MirrorSet([
        image.chunks,
        { reader: openStore(f.store), prefix: "chunks/" },
      ]);
      return new ChunkedDevice(image.index, mirrors);
    },
  ],
  [
    // Half of it kept by an earlier run (checked on first read), half fetched now.
    "unpacked copy over chunked (half warm)",
    async (_t, f) => {
      const root = join(f.dir, "unpacked");
      const cold = await UnpackedDevice.open(await chunked(f), root);
      await cold.read(0, Math.floor(f.data.length / 2));
      await cold.close();
      return UnpackedDevice.open(await chunked(f), root);
    },
  ],
  [
    // A release whose boot pack holds pieces of chunks (scattered small reads, one across a
    // text/zero boundary, the image's tail): pieces, their chunks' other bytes and the rest.
    "boot-pack pieces over an unpacked copy (a release after optimize)",
    async (_t, f) => {
      const profile = join(f.dir, "boot.profile");
      writeFileSync(
        profile,
        encodeProfile([
          { offset: 12_388, length: 5000, ms: 0 },
          { offset: 698_000, length: 9000, ms: 1 },
          // At most two 4 KiB grains: under 75% of any chunk (16 KiB or more), so always a piece.
          { offset: 1_900_000, length: 4000, ms: 2 },
          { offset: f.data.length - 3000, length: 3000, ms: 3 },
        ]),
      );
      const r = await optimizeRelease({ store: f.store, name: "disk", profile });
      assert.ok(r.packPieces > 0, "the pack holds pieces");
      const stack = await openDeviceStack("disk", {
        stores: [f.store],
        cache: join(f.dir, "cache"),
        policy: { trusted: [], insecure: true, statePath: null },
      });
      const at = 1_900_000;
      assert.ok((await stack.device.read(at, 4096)).equals(f.data.subarray(at, at + 4096)));
      assert.ok((stack.pieces?.pieceReads ?? 0) > 0, "read from a piece");
      return stack.device;
    },
  ],
  [
    "copy-on-write over chunked",
    async (_t, f) =>
      CowDevice.open(await chunked(f), join(f.dir, "overlay.cow"), { baseId: "test" }),
  ],
  [
    "tracer over an unpacked copy",
    async (_t, f) =>
      new TraceDevice(await UnpackedDevice.open(await chunked(f), join(f.dir, "u")), null),
  ],
  [
    "tracer over file",
    async (_t, f) => new TraceDevice(await FileDevice.open(f.image), join(f.dir, "trace.profile")),
  ],
  [
    // Lent out: its close leaves the file open (the lender closes it after the suite).
    "borrowed device",
    async (t, f) => {
      const file = await FileDevice.open(f.image);
      t.after(() => file.close());
      return new BorrowedDevice(file);
    },
  ],
  [
    "prefetcher over chunked",
    async (_t, f) =>
      new PrefetchDevice(await chunked(f), [{ offset: 0, length: f.data.length, ms: 0 }], {
        streams: 2,
      }),
  ],
  [
    "HTTP range device (nginx)",
    async (t, f) => {
      const nginx = await startNginx(t, f.dir);
      return nginx ? HttpDevice.open(`${nginx.url}disk.img`) : null;
    },
  ],
  [
    "block cache over HTTP (cold, then warm)",
    async (t, f) => {
      const nginx = await startNginx(t, f.dir);
      if (!nginx) return null;
      const open = async (): Promise<RangeCacheDevice> =>
        RangeCacheDevice.open(
          await HttpDevice.open(`${nginx.url}disk.img`),
          join(f.dir, "rc"),
          "disk",
          {
            blockSize: 64 * 1024,
          },
        );
      const cold = await open();
      await cold.read(0, f.data.length);
      await cold.close();
      return open();
    },
  ],
];

/** Stacks whose small reads are answered at once (readIntoNow) once the suite has read them. */
const WARM_AT_ONCE = new Set([
  "file",
  "tracer over file",
  "borrowed device",
  "unpacked copy over chunked (half warm)",
  "tracer over an unpacked copy",
  "block cache over HTTP (cold, then warm)",
]);

describe("block device conformance", () => {
  for (const [name, make] of factories) {
    it(name, async (t) => {
      const f = await fixture(t);
      const dev = await make(t, f);
      if (!dev) return;
      t.after(() => dev.close());
      assert.equal(dev.size, f.data.length);

      // Reads: aligned, unaligned, spanning chunks and zero runs, the last byte, empty.
      const probes: [number, number][] = [
        [0, 4096],
        [1, 1],
        [4095, 2],
        [600_000, 300_000],
        [650_000, 1_500_000],
        [f.data.length - 1, 1],
        [f.data.length - 70_000, 70_000],
        [123, 0],
      ];
      for (let i = 0; i < 20; i++) {
        const off = Math.floor(Math.random() * f.data.length);
        probes.push([off, Math.min(f.data.length - off, 1 + Math.floor(Math.random() * 200_000))]);
      }
      const reads = await Promise.all(probes.map(([o, l]) => dev.read(o, l)));
      probes.forEach(([o, l], i) =>
        assert.ok(reads[i].equals(f.data.subarray(o, o + l)), `read(${o}, ${l}) differs`),
      );

      if (dev.readInto) {
        // Into the caller's buffer: the same bytes, whatever the buffer held before.
        for (const [o, l] of probes) {
          const into = Buffer.alloc(l, 0xa5);
          await dev.readInto(o, into);
          assert.ok(into.equals(f.data.subarray(o, o + l)), `readInto(${o}, ${l}) differs`);
        }
        await assert.rejects(dev.readInto(f.data.length - 10, Buffer.alloc(11)), OutOfRangeError);
      }

      if (dev.readIntoNow) {
        // At once, where the device can: the same bytes; where it cannot, false (the caller
        // then uses readInto). Out of range is never answered.
        let atOnce = 0;
        for (const [o, l] of probes) {
          const into = Buffer.alloc(l, 0xa5);
          if (!dev.readIntoNow(o, into)) continue;
          atOnce++;
          assert.ok(into.equals(f.data.subarray(o, o + l)), `readIntoNow(${o}, ${l}) differs`);
        }
        t.diagnostic(`${atOnce} of ${probes.length} reads answered at once`);
        // Four of the fixed probes are small and not empty.
        if (WARM_AT_ONCE.has(name)) assert.ok(atOnce >= 4, "the small warm reads are at once");
        let beyond: Error | null = null;
        try {
          assert.equal(dev.readIntoNow(f.data.length - 10, Buffer.alloc(11)), false);
        } catch (err) {
          beyond = err as Error;
        }
        if (beyond)
          assert.ok(beyond instanceof OutOfRangeError, `beyond the end: ${beyond.message}`);
      }

      await assert.rejects(dev.read(f.data.length - 10, 11), OutOfRangeError);
      await assert.rejects(dev.read(-1, 5), OutOfRangeError);

      // Extents: start at the offset, stay within the range, and holes read as zeros.
      if (dev.extents) {
        const ext = await dev.extents(100, f.data.length - 100);
        assert.equal(ext[0].offset, 100);
        let pos = 100;
        for (const e of ext) {
          assert.equal(e.offset, pos, "extents are contiguous");
          if (e.zero)
            assert.ok(
              f.data.subarray(e.offset, e.offset + e.length).every((b) => b === 0),
              `extent at ${e.offset} claims zeros`,
            );
          pos += e.length;
        }
        assert.ok(pos <= f.data.length);
      }

      if (!dev.readOnly && dev.write) {
        const expect = Buffer.from(f.data);
        const writes: [number, Buffer][] = [
          [0, randomBytes(10)],
          [4090, randomBytes(20)],
          [700_000, randomBytes(70_000)],
          [f.data.length - 3, randomBytes(3)],
        ];
        await Promise.all(writes.map(([o, d]) => dev.write!(o, d)));
        for (const [o, d] of writes) d.copy(expect, o);
        await dev.writeZeroes?.(20_000, 5000);
        expect.fill(0, 20_000, 25_000);
        await dev.flush?.();
        const back = await dev.read(0, f.data.length);
        assert.ok(back.equals(expect), "data written does not read back");
      } else if (dev.readOnly) {
        await assert.rejects(
          Promise.resolve().then(
            () => dev.write?.(0, Buffer.alloc(1)) ?? Promise.reject(new Error("no write")),
          ),
        );
      }
    });
  }

  it("block cache: a damaged cached block is fetched again, a torn log tail is ignored, offline names what is missing", async (t) => {
    const f = await fixture(t);
    const root = join(f.dir, "rc");
    const B = 64 * 1024;
    const open = async (offline = false): Promise<RangeCacheDevice> =>
      RangeCacheDevice.open(await FileDevice.open(f.image), root, "id-1", {
        blockSize: B,
        offline,
      });
    const a = await open();
    assert.ok((await a.read(B + 10, 3 * B)).equals(f.data.subarray(B + 10, 4 * B + 10)));
    assert.equal(a.stats.misses, 4);
    assert.equal(a.stats.fetchedBytes, 4 * B);
    const dir = a.dir;
    await a.close();
    // Damage block 2's bytes and tear the log's tail.
    const dataPath = join(dir, "data");
    const data = readFileSync(dataPath);
    data[2 * B + 5] ^= 0xff;
    writeFileSync(dataPath, data);
    writeFileSync(
      join(dir, "blocks"),
      Buffer.concat([readFileSync(join(dir, "blocks")), Buffer.alloc(7)]),
    );
    const b = await open();
    assert.ok((await b.read(0, 5 * B)).equals(f.data.subarray(0, 5 * B)), "repaired data");
    assert.equal(b.stats.repaired, 1);
    assert.equal(b.stats.hits, 3); // blocks 1, 3, 4
    await b.close();
    const off = await open(true);
    assert.ok((await off.read(0, 5 * B)).equals(f.data.subarray(0, 5 * B)));
    await assert.rejects(off.read(6 * B, 10), /not in the cache .*offline/);
    await off.close();
    // A damaged block whose source now sends other bytes under the same identity: refused.
    const again = readFileSync(dataPath);
    again[3 * B] ^= 0xff;
    writeFileSync(dataPath, again);
    const changed = Buffer.from(f.data);
    changed[3 * B + 1] ^= 0xff;
    writeFileSync(f.image, changed);
    const c = await open();
    await assert.rejects(c.read(3 * B, 10), /other bytes for block 3 .*same ETag/);
    assert.ok((await c.read(B, 10)).equals(f.data.subarray(B, B + 10)), "other blocks still read");
    await c.close();
    writeFileSync(f.image, f.data);
    // Another identity (the file changed on the server) starts empty.
    const other = await RangeCacheDevice.open(await FileDevice.open(f.image), root, "id-2", {
      blockSize: B,
    });
    assert.equal(other.stats.cachedBytes, 0);
    await other.close();
  });

  it("unpacked copy: a damaged chunk is fetched again, zeros never come from the file, a torn log tail is ignored, offline serves what it holds", async (t) => {
    const f = await fixture(t);
    const root = join(f.dir, "unpacked");
    const a = await UnpackedDevice.open(await chunked(f), root);
    assert.ok((await a.read(0, f.data.length)).equals(f.data));
    await a.drain();
    assert.ok((await a.read(0, f.data.length)).equals(f.data), "read again, from the file");
    assert.equal(a.stats.fileReads, 1);
    const dir = a.dir;
    await a.close();
    const probe = await chunked(f);
    const index = probe.index;
    await probe.close();
    const text = index.chunks[1];
    const zero = index.chunks.find((c) => isZeroChunk(c) && c.offset > 0)!;
    assert.ok(zero, "the fixture has a zero chunk");
    // Damage one chunk's bytes, write garbage where a zero chunk is, tear the log's tail.
    const dataPath = join(dir, "data");
    const bytes = readFileSync(dataPath);
    bytes[text.offset + 7] ^= 0xff;
    bytes.fill(0x55, zero.offset, zero.offset + zero.size);
    writeFileSync(dataPath, bytes);
    writeFileSync(
      join(dir, "chunks"),
      Buffer.concat([readFileSync(join(dir, "chunks")), Buffer.alloc(3)]),
    );
    const b = await UnpackedDevice.open(await chunked(f), root);
    assert.ok((await b.read(0, f.data.length)).equals(f.data), "repaired data, zeros as zeros");
    assert.equal(b.stats.repaired, 1);
    assert.ok(
      (await b.read(zero.offset, zero.size)).every((x) => x === 0),
      "a warm zero read",
    );
    await b.close();
    assert.equal(readFileSync(join(dir, "chunks")).length % 4, 0, "the torn record was cut");
    // Offline (the store gone): what the file holds is served, what it lacks is an error.
    const offline = await UnpackedDevice.open(
      await chunked(f, () => ({
        fetch: (c) => Promise.reject(new Error(`chunk ${c.id} missing (offline)`)),
        close: () => Promise.resolve(),
      })),
      root,
    );
    assert.ok(
      (await offline.read(text.offset, text.size)).equals(
        f.data.subarray(text.offset, text.offset + text.size),
      ),
    );
    await offline.close();
    rmSync(dataPath);
    const gone = await UnpackedDevice.open(
      await chunked(f, () => ({
        fetch: (c) => Promise.reject(new Error(`chunk ${c.id} missing (offline)`)),
        close: () => Promise.resolve(),
      })),
      root,
    );
    await assert.rejects(gone.read(text.offset, 10), /missing \(offline\)/);
    await gone.close();
  });

  it("unpacked copy keeps to the cache folder's quota: past it, chunks are served but not kept", async (t) => {
    const f = await fixture(t);
    const dir = join(f.dir, "cache");
    const space = new ChunkCache(dir, { quotaBytes: 500_000 });
    const dev = await UnpackedDevice.open(await chunked(f), join(dir, "unpacked"), { space });
    assert.ok((await dev.read(0, f.data.length)).equals(f.data));
    await dev.drain();
    assert.ok(dev.stats.unkeptBytes > 0, "some chunks were not kept");
    assert.ok(dev.stats.cachedBytes <= 500_000);
    assert.ok(space.totalBytes <= space.quotaBytes, `${space.totalBytes} > quota`);
    assert.ok((await dev.read(0, f.data.length)).equals(f.data), "still served right");
    await dev.close();
    // The folder is a block cache of the cache folder: a restart counts it.
    const again = new ChunkCache(dir, { quotaBytes: 500_000 });
    assert.equal(again.blockCaches.count, 1);
  });

  it("block caches share the chunk cache's quota: least recently used data goes first, a cache in use is never evicted", async (t) => {
    const f = await fixture(t);
    const B = 64 * 1024;
    const dir = join(f.dir, "cache");
    const space = new ChunkCache(dir, { quotaBytes: 8 * B });
    // Two chunks of incompressible bytes (about one block each), the oldest data.
    for (let i = 0; i < 2; i++) {
      const bytes = randomBytes(B);
      await space.put({ id: createHash("sha256").update(bytes).digest("hex"), size: B }, bytes);
    }
    assert.equal(space.chunkCount, 2);
    const open = async (identity: string): Promise<RangeCacheDevice> =>
      RangeCacheDevice.open(await FileDevice.open(f.image), join(dir, "iso"), identity, {
        blockSize: B,
        space,
      });
    const a = await open("iso-a");
    await a.read(0, 4 * B);
    await a.close();
    assert.deepEqual(space.blockCaches, { bytes: 4 * B, count: 1 });
    const b = await open("iso-b");
    assert.ok((await b.read(4 * B, 4 * B)).equals(f.data.subarray(4 * B, 8 * B)));
    // The chunks were least recently used: they went, "iso-a" stayed.
    assert.equal(space.chunkCount, 0);
    assert.deepEqual(space.blockCaches, { bytes: 8 * B, count: 2 });
    assert.ok(space.totalBytes <= space.quotaBytes);
    await b.read(8 * B, 2 * B);
    // "iso-a" (closed) was evicted whole, its folder removed.
    assert.equal(existsSync(a.dir), false, "the unused block cache was evicted");
    assert.deepEqual(space.blockCaches, { bytes: 6 * B, count: 1 });
    // More than the quota for the one cache in use: served right, not kept, never evicted.
    const more = await b.read(10 * B, 4 * B);
    assert.ok(more.equals(f.data.subarray(10 * B, 14 * B)));
    assert.equal(b.stats.unkeptBytes, 4 * B);
    assert.ok(space.totalBytes <= space.quotaBytes, `${space.totalBytes} > quota`);
    assert.ok(existsSync(join(b.dir, "data")));
    await b.close();
    // After a restart the folder's scan counts the block cache on disk.
    const again = new ChunkCache(dir, { quotaBytes: 8 * B });
    assert.deepEqual(again.blockCaches, { bytes: 6 * B, count: 1 });
    assert.equal(again.totalBytes, 6 * B);
  });

  it("copy-on-write: the base is never written, the overlay persists, deleting it resets", async (t) => {
    const f = await fixture(t);
    const overlay = join(f.dir, "disk.cow");
    const cow = await CowDevice.open(await FileDevice.open(f.image), overlay, { baseId: "base-1" });
    await cow.write(1000, Buffer.from("hello overlay"));
    await cow.flush();
    await cow.close();
    assert.ok(readFileSync(f.image).equals(f.data), "the base changed");
    const again = await CowDevice.open(await FileDevice.open(f.image), overlay, {
      baseId: "base-1",
    });
    assert.equal((await again.read(1000, 13)).toString(), "hello overlay");
    assert.equal(again.writtenBlocks, 1);
    await again.close();

    // Over a base that answers at once: the overlay's blocks are never answered from the base.
    const warm = await UnpackedDevice.open(await chunked(f), join(f.dir, "warm"));
    await warm.read(0, f.data.length);
    const over = await CowDevice.open(warm, join(f.dir, "warm.cow"), { baseId: "warm" });
    t.after(() => over.close());
    await over.write(70_000, Buffer.from("written"));
    const into = Buffer.alloc(4096);
    assert.equal(over.readIntoNow(68_000, into), false, "a range with a written block");
    assert.ok(over.readIntoNow(200_000, into), "a range the base holds");
    assert.ok(into.equals(f.data.subarray(200_000, 204_096)));
    await over.readInto(68_000, into);
    assert.equal(into.subarray(2000, 2007).toString(), "written");

    const base = await FileDevice.open(f.image);
    await assert.rejects(
      CowDevice.open(base, overlay, { baseId: "base-2" }),
      /was made for base base-1/,
    );
    rmSync(overlay);
    const fresh = await CowDevice.open(base, overlay, { baseId: "base-2" });
    assert.ok(
      (await fresh.read(0, f.data.length)).equals(f.data),
      "a new overlay reads as the base",
    );
    await fresh.close();
  });

  it("a raw image by URL is kept in the stack's cache: a second open reads it offline", async (t) => {
    const f = await fixture(t);
    const nginx = await startNginxProcess(f.dir, tempDir(t, "inetboot-nginx-"));
    t.after(() => nginx.stop());
    const cache = join(f.dir, "cache");
    const policy = { trusted: [], insecure: true, statePath: null };
    const online = await openDeviceStack(`${nginx.url}disk.img`, { cache, policy });
    assert.ok((await online.device.read(0, f.data.length)).equals(f.data));
    await online.close();
    nginx.stop();
    const offline = await openDeviceStack(`${nginx.url}disk.img`, { cache, policy, offline: true });
    assert.ok((await offline.device.read(0, f.data.length)).equals(f.data), "read from the cache");
    await offline.close();
    await assert.rejects(
      openDeviceStack(`${nginx.url}other.img`, { cache, policy, offline: true }),
      /never opened online/,
    );
  });
});
