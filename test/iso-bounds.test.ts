// What an ISO (or the paths asked of it) may make the reader hold: directories are cached once
// by where they lie (not per spelling of the path), the cache is bounded, and a crafted image
// with a directory loop, too deep a path or too many records gives a clear IsoFormatError.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { BufferDevice } from "../src/block/buffer-device.ts";
import { IsoFormatError, IsoImage, SECTOR } from "../src/iso/iso9660.ts";
import { tempDir } from "./helpers.ts";
import { makeIso } from "./iso-maker.ts";

const MiB = 1024 * 1024;

function manyFiles(dir: string, n: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < n; i++) out[`${dir}/file-with-a-long-name-${i}.txt`] = `${i}\n`;
  return out;
}

/** Where the directory record named `id` (ISO 9660 name) lies in the directory at `extent`. */
function findRecord(iso: Buffer, extent: number, size: number, id: string): number {
  for (let at = extent * SECTOR; at < extent * SECTOR + size;) {
    const len = iso[at];
    if (len === 0) {
      at = (Math.floor(at / SECTOR) + 1) * SECTOR; // padding to the sector's end
      continue;
    }
    if (iso.toString("latin1", at + 33, at + 33 + iso[at + 32]) === id) return at;
    at += len;
  }
  throw new Error(`no record ${id} in the directory at ${extent}`);
}

const extentOf = (iso: Buffer, at: number): [number, number] => [
  iso.readUInt32LE(at + 2),
  iso.readUInt32LE(at + 10),
];

/** An ISO with /a (2,000 files), /a/b, /a/b/c, where c's record is patched to point at /a. */
async function loopIso(t: TestContext): Promise<Buffer | null> {
  const dir = tempDir(t);
  const path = await makeIso(t, dir, { ...manyFiles("a", 2000), "a/b/c/x.txt": "x" }, ["-R"]);
  if (!path) return null;
  const iso = readFileSync(path);
  const root = extentOf(iso, 16 * SECTOR + 156);
  const aAt = findRecord(iso, ...root, "A");
  const bAt = findRecord(iso, ...extentOf(iso, aAt), "B");
  const cAt = findRecord(iso, ...extentOf(iso, bAt), "C");
  const [aExtent, aSize] = extentOf(iso, aAt);
  // Both-endian fields (ECMA-119 9.1.3, 9.1.4): extent at 2 (LE) and 6 (BE), size at 10 and 14.
  iso.writeUInt32LE(aExtent, cAt + 2);
  iso.writeUInt32BE(aExtent, cAt + 6);
  iso.writeUInt32LE(aSize, cAt + 10);
  iso.writeUInt32BE(aSize, cAt + 14);
  writeFileSync(path, iso);
  return iso;
}

/** `name` with each letter's case flipped at random (seeded). */
function caseVariants(name: string, count: number): string[] {
  let seed = 12345;
  const out = new Set<string>();
  while (out.size < count) {
    let s = "";
    for (const ch of name) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      s += (seed >> 16) & 1 ? ch.toUpperCase() : ch.toLowerCase();
    }
    out.add(s);
  }
  return [...out];
}

describe("ISO directory cache and lookup bounds", () => {
  it("3,000 case variants of one path cache one directory; RSS stays flat", async (t) => {
    const dir = tempDir(t);
    const path = await makeIso(t, dir, manyFiles("SomeLongDirectoryName", 400), ["-R", "-J"]);
    if (!path) return;
    const image = await IsoImage.open(new BufferDevice(readFileSync(path)), "case.iso");
    await image.list("/SomeLongDirectoryName"); // warm up what one lookup costs
    const before = process.memoryUsage().rss;
    for (const v of caseVariants("/somelongdirectoryname", 3000)) {
      const e = await image.stat(`${v}/FILE-WITH-A-LONG-NAME-7.TXT`);
      assert.equal(e?.size, 2);
    }
    const grown = (process.memoryUsage().rss - before) / MiB;
    const stats = image.cacheStats;
    t.diagnostic(`RSS +${grown.toFixed(1)} MiB, cache ${JSON.stringify(stats)}`);
    assert.ok(stats.directories <= 2, `${stats.directories} directories cached`);
    assert.ok(grown < 60, `RSS grew by ${grown.toFixed(0)} MiB`);
  });

  it("a directory loop is an IsoFormatError, and 100 requests down it hold nothing", async (t) => {
    const iso = await loopIso(t);
    if (!iso) return;
    const image = await IsoImage.open(new BufferDevice(iso), "loop.iso");
    assert.equal((await image.list("/a")).length, 2001);
    await assert.rejects(
      image.list("/a/b/c"),
      (err: unknown) => err instanceof IsoFormatError && /directory loop/.test(err.message),
    );
    const before = process.memoryUsage().rss;
    for (let k = 1; k <= 100; k++) {
      const deep = `/a${"/b/c".repeat(k)}`;
      await image.list(deep).then(
        () => assert.fail(`${deep} listed`),
        (err: unknown) => assert.ok(err instanceof IsoFormatError, String(err)),
      );
    }
    await assert.rejects(image.walk("/", 200), IsoFormatError);
    const grown = (process.memoryUsage().rss - before) / MiB;
    t.diagnostic(`RSS +${grown.toFixed(1)} MiB, cache ${JSON.stringify(image.cacheStats)}`);
    assert.ok(image.cacheStats.directories <= 3);
    assert.ok(grown < 60, `RSS grew by ${grown.toFixed(0)} MiB`);
  });

  it("bounds the cache by count and bytes, and lookups by depth and records read", async (t) => {
    const dir = tempDir(t);
    const files: Record<string, string> = { ...manyFiles("big", 500), "a/b/c/d/e/f.txt": "f" };
    for (let i = 0; i < 20; i++) files[`d${i}/x.txt`] = "x";
    const path = await makeIso(t, dir, files, ["-R"]);
    if (!path) return;
    const bytes = readFileSync(path);

    const small = await IsoImage.open(new BufferDevice(bytes), "t.iso", {
      cacheDirectories: 4,
    });
    for (let i = 0; i < 20; i++) assert.equal((await small.list(`/d${i}`)).length, 1);
    assert.ok(small.cacheStats.directories <= 4, JSON.stringify(small.cacheStats));

    const tight = await IsoImage.open(new BufferDevice(bytes), "t.iso", { cacheBytes: 64 * 1024 });
    await tight.list("/big");
    for (let i = 0; i < 20; i++) await tight.list(`/d${i}`);
    assert.ok(tight.cacheStats.bytes <= 64 * 1024, JSON.stringify(tight.cacheStats));

    const shallow = await IsoImage.open(new BufferDevice(bytes), "t.iso", { maxDepth: 3 });
    assert.equal((await shallow.list("/a/b/c")).length, 1);
    await assert.rejects(shallow.list("/a/b/c/d"), /4 directories deep, expected at most 3/);
    assert.equal(await shallow.stat("/a/b/c/d/e/f.txt"), null);

    const few = await IsoImage.open(new BufferDevice(bytes), "t.iso", {
      maxRecordsPerLookup: 100,
    });
    assert.equal((await few.list("/a")).length, 1);
    await assert.rejects(few.list("/big"), /more than 100 directory records/);
    assert.equal((await few.stat("/a/b/c/d/e/f.txt"))?.size, 1, "a failed lookup breaks nothing");
  });
});
