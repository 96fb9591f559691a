// Every body read from a store is bounded by what it can legitimately be: a mirror answering
// with 1 GiB (or forever) is refused as soon as the bound is passed, the connection is closed,
// and the client's memory stays flat.
import assert from "node:assert/strict";
import { closeSync, ftruncateSync, mkdirSync, openSync } from "node:fs";
import { createServer } from "node:http";
import type { ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { readLatest } from "../src/store/catalog.ts";
import { loadChunk } from "../src/store/chunks.ts";
import { BodyTooLargeError } from "../src/store/errors.ts";
import { HttpStoreReader } from "../src/store/http-store.ts";
import { chunkFile, indexPath } from "../src/store/layout.ts";
import {
  indexBytesFor,
  MAX_INDEX_BYTES,
  MAX_RELEASE_FILE_BYTES,
  maxFrameBytes,
} from "../src/store/limits.ts";
import { LocalStore } from "../src/store/local-store.ts";
import { encodeRelease, RELEASE_FORMAT } from "../src/store/release.ts";
import type { Release } from "../src/store/release.ts";
import { openImage } from "../src/store/source.ts";
import { inetboot, tempDir } from "./helpers.ts";

const GiB = 1024 ** 3;
const MB = 1024 ** 2;
/** Growth of RSS allowed while a 1 GiB body is refused (before the fix: over 1 GB). */
const RSS_BUDGET = 64 * MB;

interface Huge {
  /** Bytes the server got onto the socket. */
  sent: number;
  /** The client closed the connection before the body was complete. */
  cutShort: boolean;
  /** Requests for huge files. */
  requests: number;
}

/** Streams a 1 GiB body (64 KiB at a time, with backpressure), with or without Content-Length. */
function sendHuge(res: ServerResponse, stats: Huge, declare: boolean): void {
  const block = Buffer.alloc(64 * 1024, 0x41);
  res.writeHead(200, declare ? { "content-length": String(GiB) } : {});
  res.on("close", () => {
    if (!res.writableFinished) stats.cutShort = true;
  });
  const pump = (): void => {
    while (stats.sent < GiB && !res.destroyed) {
      stats.sent += block.length;
      if (!res.write(block)) return void res.once("drain", pump);
    }
    if (!res.destroyed) res.end();
  };
  pump();
}

/** An HTTP store whose every file in `huge` is 1 GiB; `files` are served as they are. */
async function hostileStore(
  t: TestContext,
  options: { huge: string[]; files?: Record<string, Buffer>; declare?: boolean },
): Promise<{ url: string; stats: Huge }> {
  const stats: Huge = { sent: 0, cutShort: false, requests: 0 };
  const server = createServer((req, res) => {
    const path = (req.url ?? "").replace(/^\/store\//, "");
    if (options.huge.includes(path)) {
      stats.requests++;
      return sendHuge(res, stats, options.declare ?? false);
    }
    const file = options.files?.[path];
    if (file) return void res.end(file);
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/store/`, stats };
}

/** Runs `fn`, which must fail with BodyTooLargeError for `limit`; returns the RSS growth. */
async function refusedWithin(fn: () => Promise<unknown>, limit: number): Promise<number> {
  globalThis.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  try {
    await assert.rejects(fn(), (err: Error) => {
      assert.ok(err instanceof BodyTooLargeError, `expected BodyTooLargeError, got ${err.stack}`);
      assert.equal(err.code, "ERR_STORE_BODY_TOO_LARGE");
      assert.equal(err.limit, limit);
      assert.match(err.message, new RegExp(`larger than ${limit} bytes`));
      return true;
    });
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, process.memoryUsage().rss) - before;
}

const release: Release = {
  format: RELEASE_FORMAT,
  name: "big",
  revision: 1,
  created: "2026-11-22T10:00:00.000Z",
  size: 10 * 65536,
  index: "a".repeat(64),
  chunks: 10,
  chunker: { min: 16384, avg: 65536, max: 262144 },
  compression: "zstd",
  parent: null,
  profile: null,
  pack: null,
  keyId: null,
};
const insecure = { trusted: [], insecure: true, statePath: null };

describe("store bodies are bounded", () => {
  it("a 1 GiB `latest` pointer is refused past 1 MiB; the connection is closed early", async (t) => {
    const { url, stats } = await hostileStore(t, { huge: ["releases/big/latest"] });
    const reader = new HttpStoreReader(url, { backoffMs: 1 });
    t.after(() => reader.close());
    const growth = await refusedWithin(() => readLatest(reader, "big"), MAX_RELEASE_FILE_BYTES);
    assert.ok(growth < RSS_BUDGET, `RSS grew ${(growth / MB).toFixed(0)} MB`);
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB, server sent ${stats.sent} bytes`);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(stats.cutShort, "the server saw the connection closed before the body ended");
    assert.ok(stats.sent < 64 * MB, `the server got only ${stats.sent} bytes out, not 1 GiB`);
  });

  it("a 1 GiB release is refused past 1 MiB, and is not retried", async (t) => {
    const { url, stats } = await hostileStore(t, {
      huge: ["releases/big/1.json"],
      files: { "releases/big/latest": Buffer.from("1\n") },
    });
    const growth = await refusedWithin(
      () => openImage("big", { store: url, policy: insecure }),
      MAX_RELEASE_FILE_BYTES,
    );
    assert.ok(growth < RSS_BUDGET, `RSS grew ${(growth / MB).toFixed(0)} MB`);
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB, server sent ${stats.sent} bytes`);
    assert.ok(stats.sent < 64 * MB, `sent ${stats.sent} bytes`);
    assert.equal(stats.requests, 1, "a too-large body is final: no retry");
  });

  it("a 1 GiB index named by a release is refused past the release's exact index size", async (t) => {
    const { url, stats } = await hostileStore(t, {
      huge: [indexPath(release.index)],
      files: {
        "releases/big/latest": Buffer.from("1\n"),
        "releases/big/1.json": Buffer.from(encodeRelease(release)),
      },
    });
    const limit = indexBytesFor(release.chunks);
    assert.equal(limit, 48 + 16 + 40 * 11);
    const growth = await refusedWithin(
      () => openImage("big", { store: url, policy: insecure }),
      limit,
    );
    assert.ok(growth < RSS_BUDGET, `RSS grew ${(growth / MB).toFixed(0)} MB`);
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB, server sent ${stats.sent} bytes`);
    assert.ok(stats.sent < 64 * MB, `sent ${stats.sent} bytes`);
  });

  it("a bare index declaring 1 GiB is refused from its Content-Length, unread", async (t) => {
    const { url, stats } = await hostileStore(t, { huge: ["x.caibx"], declare: true });
    const growth = await refusedWithin(
      () => openImage(`${url}x.caibx`, { store: url, policy: { ...insecure, trusted: [] } }),
      MAX_INDEX_BYTES,
    );
    assert.ok(growth < RSS_BUDGET, `RSS grew ${(growth / MB).toFixed(0)} MB`);
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB, server sent ${stats.sent} bytes`);
    assert.ok(stats.sent < 64 * MB, `sent ${stats.sent} bytes`);
  });

  it("a 1 GiB chunk is refused past the compress bound of its size", async (t) => {
    const id = "b".repeat(64);
    const { url, stats } = await hostileStore(t, { huge: [`chunks/${chunkFile(id)}`] });
    const reader = new HttpStoreReader(url);
    t.after(() => reader.close());
    const limit = maxFrameBytes(65536);
    assert.ok(limit < 68 * 1024, `a 64 KiB chunk's frame is bounded near 64 KiB, got ${limit}`);
    const growth = await refusedWithin(
      () => loadChunk({ reader, prefix: "chunks/" }, { id, size: 65536 }),
      limit,
    );
    assert.ok(growth < RSS_BUDGET, `RSS grew ${(growth / MB).toFixed(0)} MB`);
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB, server sent ${stats.sent} bytes`);
    assert.ok(stats.sent < 64 * MB, `sent ${stats.sent} bytes`);
  });

  it("a 1 GiB local `latest` is refused from its size, before it is read", async (t) => {
    const dir = tempDir(t);
    mkdirSync(join(dir, "releases", "big"), { recursive: true });
    const fd = openSync(join(dir, "releases", "big", "latest"), "w");
    ftruncateSync(fd, GiB);
    closeSync(fd);
    const reader = new LocalStore(dir);
    const growth = await refusedWithin(() => readLatest(reader, "big"), MAX_RELEASE_FILE_BYTES);
    assert.ok(growth < RSS_BUDGET, `RSS grew ${(growth / MB).toFixed(0)} MB`);
    t.diagnostic(`RSS growth ${(growth / MB).toFixed(1)} MB`);
  });

  it("inetboot extract against a hostile mirror fails fast, naming the URL and the limit", async (t) => {
    const { url, stats } = await hostileStore(t, { huge: ["releases/big/latest"] });
    const dir = tempDir(t);
    const r = await inetboot(["extract", "big", join(dir, "out"), "--store", url, "--insecure"], {
      INETBOOT_STATE_DIR: dir,
    });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `Refusing ${url}releases/big/latest: .* larger than ${MAX_RELEASE_FILE_BYTES} bytes`,
      ),
    );
    assert.ok(stats.sent < 64 * MB, `sent ${stats.sent} bytes`);
  });
});

describe("range reads from a mirror", () => {
  it("a 206 that runs past its range is cut at the range's end, not read on", async (t) => {
    let sent = 0;
    let cut = false;
    const server = createServer((req, res) => {
      res.writeHead(206, { "content-range": "bytes 0-99/1073741824" });
      res.on("close", () => (cut = !res.writableFinished));
      const block = Buffer.alloc(64 * 1024, 0x42);
      const pump = (): void => {
        while (sent < GiB && !res.destroyed) {
          sent += block.length;
          if (!res.write(block)) return void res.once("drain", pump);
        }
        if (!res.destroyed) res.end();
      };
      pump();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    t.after(() => {
      server.closeAllConnections();
      server.close();
    });
    const { port } = server.address() as AddressInfo;
    const reader = new HttpStoreReader(`http://127.0.0.1:${port}/store/`);
    t.after(() => reader.close());
    const parts: Buffer[] = [];
    for await (const p of reader.readRange("packs/x.pack", 0, 100)) parts.push(p);
    assert.equal(Buffer.concat(parts).length, 100);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(cut, "the connection was closed");
    assert.ok(sent < 64 * MB, `the mirror got ${sent} bytes out before it was cut`);
  });
});
