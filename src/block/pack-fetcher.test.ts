import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { zstdCompressSync } from "node:zlib";
import { encodePack, packPath } from "../store/boot-pack.ts";
import type { PackInfo } from "../store/boot-pack.ts";
import type { IndexChunk } from "../store/caibx.ts";
import { sha256Hex } from "../store/chunks.ts";
import { FetchError, NotFoundError } from "../store/errors.ts";
import type { StoreReader } from "../store/store.ts";
import type { ChunkCache } from "./chunk-cache.ts";
import type { ChunkFetcher, ChunkRef } from "./chunk-fetcher.ts";
import { isPiece, PackFetcher } from "./pack-fetcher.ts";
import type { BlobIndex } from "../store/caibx.ts";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A store in memory that serves ranges in small parts, counting requests. */
class MemoryReader implements StoreReader {
  readonly location = "memory:/";
  readonly files = new Map<string, Buffer>();
  ranges = 0;
  failWith: Error | null = null;
  /** When set, range requests after the first wait for it before sending a byte. */
  gate: Promise<void> | null = null;

  read(path: string): Promise<Buffer> {
    const f = this.files.get(path);
    return f ? Promise.resolve(f) : Promise.reject(new NotFoundError(path));
  }
  size(path: string): Promise<number | null> {
    return Promise.resolve(this.files.get(path)?.length ?? null);
  }
  async *readRange(path: string, offset: number, length: number): AsyncIterable<Buffer> {
    this.ranges++;
    if (this.failWith) throw this.failWith;
    if (this.ranges > 1 && this.gate) await this.gate;
    const f = this.files.get(path);
    if (!f) throw new NotFoundError(path);
    for (let at = offset; at < offset + length; at += 1000) {
      await Promise.resolve();
      yield f.subarray(at, Math.min(at + 1000, offset + length));
    }
  }
  describe(path: string): string {
    return this.location + path;
  }
  async close(): Promise<void> {}
}

/** The chunk-by-chunk source under the pack: records what it was asked for. */
class RecordingFetcher implements ChunkFetcher {
  readonly asked: string[] = [];
  readonly data: Map<string, Buffer>;
  closed = false;
  constructor(data: Map<string, Buffer>) {
    this.data = data;
  }
  fetch(chunk: ChunkRef): Promise<Buffer> {
    this.asked.push(chunk.id);
    const d = this.data.get(chunk.id);
    return d ? Promise.resolve(d) : Promise.reject(new Error(`no chunk ${chunk.id}`));
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

function chunkData(n: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + n * 7 + (i >> 5)) & 0xff;
  return b;
}

/** A pack of `count` chunks in a memory store. */
function packed(count: number): {
  reader: MemoryReader;
  info: PackInfo;
  chunks: IndexChunk[];
  data: Map<string, Buffer>;
  bytes: Buffer;
} {
  const data = new Map<string, Buffer>();
  const frames = Array.from({ length: count }, (_, i) => {
    const d = chunkData(i, 3000 + i * 100);
    const chunk = { id: sha256Hex(d), size: d.length, offset: 0 };
    data.set(chunk.id, d);
    return { chunk, frame: zstdCompressSync(d) };
  });
  const pack = encodePack(frames);
  const reader = new MemoryReader();
  reader.files.set(packPath(pack.info.digest), pack.bytes);
  return { reader, info: pack.info, chunks: frames.map((f) => f.chunk), data, bytes: pack.bytes };
}

describe("PackFetcher", () => {
  it("format 2: pieces are waited for even before their part of the pack starts", async (t) => {
    // Five incompressible 300 KB pieces of one 2 MiB chunk: two download pieces, one connection.
    const data = new Map<string, Buffer>();
    const frames = Array.from({ length: 5 }, (_, i) => {
      const d = randomBytes(300_000);
      const chunk = { id: sha256Hex(d), size: d.length, offset: i * 300_000 };
      data.set(chunk.id, d);
      return { chunk, frame: zstdCompressSync(d) };
    });
    const index = {
      chunks: [{ id: "f".repeat(64), offset: 0, size: 2 * 1024 * 1024 }],
      size: 2 * 1024 * 1024,
    } as BlobIndex;
    const pack = encodePack(frames, 2);
    const reader = new MemoryReader();
    reader.files.set(packPath(pack.info.digest), pack.bytes);
    let open!: () => void;
    reader.gate = new Promise((r) => (open = r));
    const dir = mkdtempSync(join(tmpdir(), "inetboot-pack-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const next = new RecordingFetcher(data);
    const fetcher = new PackFetcher(next, [reader], pack.info, {
      connections: 1,
      index,
      tableFile: join(dir, "kept.table"),
    });
    const entries = await fetcher.entries;
    assert.deepEqual(entries, pack.entries);
    assert.ok(entries.every((e) => isPiece(index, e)));
    assert.ok(
      readFileSync(join(dir, "kept.table")).equals(pack.bytes.subarray(0, entries[0].offset)),
    );
    while (reader.ranges < 2) await new Promise((r) => setTimeout(r, 1));
    // The last piece is in the second part, not started: still waited for.
    const last = frames[4].chunk;
    const read = fetcher.fetch(last);
    open();
    assert.ok((await read).equals(data.get(last.id)!));
    assert.deepEqual(next.asked, [], "no piece was asked of the chunk source");
    await fetcher.close();
    assert.equal(fetcher.stats.delivered, 5);
    assert.ok(fetcher.stats.requests >= 3, `${fetcher.stats.requests} requests`);
  });

  it("a demand read of a chunk on its way waits for the pack instead of the chunk source", async () => {
    const { reader, info, chunks, data } = packed(4);
    let open!: () => void;
    reader.gate = new Promise((r) => (open = r));
    const next = new RecordingFetcher(data);
    const fetcher = new PackFetcher(next, [reader], info);
    while (reader.ranges < 2) await new Promise((r) => setTimeout(r, 1));
    const reads = chunks.map((c) => fetcher.fetch(c));
    open();
    const got = await Promise.all(reads);
    chunks.forEach((c, i) => assert.ok(got[i].equals(data.get(c.id)!), `chunk ${i}`));
    assert.deepEqual(next.asked, [], "nothing was read chunk by chunk");
    await fetcher.close();
    assert.equal(fetcher.stats.delivered, 4);
  });

  it("delivers every chunk of the pack, verified, in one request after the table", async () => {
    const { reader, info, chunks, data } = packed(6);
    const next = new RecordingFetcher(data);
    const fetcher = new PackFetcher(next, [reader], info, { connections: 2 });
    await fetcher.done;
    assert.equal(fetcher.stats.finished, true);
    assert.equal(fetcher.stats.error, null);
    assert.equal(fetcher.stats.wanted, 6);
    assert.equal(fetcher.stats.delivered, 6);
    assert.equal(fetcher.stats.failed, 0);
    assert.equal(fetcher.stats.transferredBytes, info.size, "the table and every frame, once");
    assert.equal(
      fetcher.stats.deliveredBytes,
      chunks.reduce((n, c) => n + c.size, 0),
    );
    // All frames are contiguous and small: one table request plus one piece.
    assert.equal(fetcher.stats.requests, 2);
    assert.ok(fetcher.stats.seconds !== null && fetcher.stats.seconds >= 0);
    // Finished, with no cache to keep them: later reads go to the chunk source.
    for (const c of chunks) assert.ok((await fetcher.fetch(c)).equals(data.get(c.id)!));
    assert.equal(next.asked.length, 6);
    await fetcher.close();
    assert.ok(next.closed, "close closes the layer below");
  });

  it("a damaged frame is rejected and counted as failed; reads still get the right bytes", async () => {
    const { reader, info, chunks, data, bytes } = packed(4);
    // The last byte of the pack belongs to the last frame; the table is untouched.
    bytes[bytes.length - 1] ^= 0xff;
    const next = new RecordingFetcher(data);
    const fetcher = new PackFetcher(next, [reader], info);
    await fetcher.done;
    assert.equal(fetcher.stats.delivered, 3);
    assert.equal(fetcher.stats.failed, 1);
    for (const c of chunks) assert.ok((await fetcher.fetch(c)).equals(data.get(c.id)!));
    await fetcher.close();
  });

  it("a table that does not match the release makes the pack unusable, not the reads", async () => {
    const { reader, info, chunks, data } = packed(3);
    const next = new RecordingFetcher(data);
    const fetcher = new PackFetcher(next, [reader], { ...info, table: "0".repeat(64) }, {});
    await fetcher.done;
    assert.match(String(fetcher.stats.error), /does not match the digest the release signs/);
    assert.equal(fetcher.stats.delivered, 0);
    assert.equal(fetcher.stats.failed, 3);
    assert.equal(fetcher.stats.finished, true);
    for (const c of chunks) assert.ok((await fetcher.fetch(c)).equals(data.get(c.id)!));
    assert.equal(next.asked.length, 3);
    await fetcher.close();
  });

  it("fails over to the next store when one cannot serve the pack", async () => {
    const { reader, info, data } = packed(3);
    const broken = new MemoryReader();
    broken.failWith = new FetchError("connection refused");
    const next = new RecordingFetcher(data);
    const fetcher = new PackFetcher(next, [broken, reader], info);
    await fetcher.done;
    assert.equal(fetcher.stats.delivered, 3);
    assert.equal(broken.ranges, 2, "tried first for the table and for the piece");
    assert.equal(reader.ranges, 2);
    assert.equal(fetcher.stats.requests, 4);
    assert.equal(fetcher.stats.failed, 0);
    await fetcher.close();
  });

  it("fetches only what the cache lacks, and puts what it fetched in the cache", async () => {
    const { reader, info, chunks, data } = packed(5);
    const held = new Set([chunks[1].id, chunks[3].id]);
    const put: string[] = [];
    const cache = {
      has: (id: string) => held.has(id),
      put: (chunk: ChunkRef) => {
        put.push(chunk.id);
        held.add(chunk.id);
        return Promise.resolve();
      },
    } as unknown as ChunkCache;
    const fetcher = new PackFetcher(new RecordingFetcher(data), [reader], info, { cache });
    await fetcher.done;
    assert.equal(fetcher.stats.wanted, 3);
    assert.equal(fetcher.stats.delivered, 3);
    assert.equal(fetcher.stats.failed, 0);
    assert.deepEqual(put.sort(), [chunks[0].id, chunks[2].id, chunks[4].id].sort());
    // Three frames with gaps between them: three pieces after the table.
    assert.equal(fetcher.stats.requests, 4);
    await fetcher.close();
  });

  it("a pack missing from every store leaves every read to the chunk source", async () => {
    const { info, chunks, data } = packed(2);
    const next = new RecordingFetcher(data);
    const fetcher = new PackFetcher(next, [new MemoryReader()], info);
    await fetcher.done;
    assert.match(String(fetcher.stats.error), /Not found: packs\//);
    for (const c of chunks) await fetcher.fetch(c);
    assert.equal(next.asked.length, 2);
    await fetcher.close();
  });
});
