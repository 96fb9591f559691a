import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { zstdCompressSync } from "node:zlib";
import { loadChunk, sha256Hex } from "./chunks.ts";
import { ChunkMissingError, FetchError } from "./errors.ts";
import { HttpStoreReader } from "./http-store.ts";
import { chunkFile } from "./layout.ts";

async function serve(
  t: TestContext,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/store/`;
}

describe("HTTP store", () => {
  const data = Buffer.from("chunk data ".repeat(1000));
  const id = sha256Hex(data);
  const path = `/store/chunks/${chunkFile(id)}`;

  it("retries 503s and dropped connections with backoff, then succeeds", async (t) => {
    let calls = 0;
    const url = await serve(t, (req, res) => {
      calls++;
      if (calls === 1) return res.writeHead(503).end("busy");
      if (calls === 2) return req.socket.destroy();
      if (req.url === path) return res.end(zstdCompressSync(data));
      res.writeHead(404).end();
    });
    const reader = new HttpStoreReader(url, { backoffMs: 10 });
    t.after(() => reader.close());
    const got = await loadChunk({ reader, prefix: "chunks/" }, { id, size: data.length });
    assert.ok(got.equals(data));
    assert.equal(calls, 3);
  });

  it("names the URL and the status when retries run out", async (t) => {
    const url = await serve(t, (_req, res) => res.writeHead(500).end());
    const reader = new HttpStoreReader(url, { backoffMs: 1, attempts: 3 });
    t.after(() => reader.close());
    await assert.rejects(
      loadChunk({ reader, prefix: "chunks/" }, { id, size: data.length }),
      (err: Error) => {
        assert.ok(err instanceof FetchError);
        assert.equal(
          err.message,
          `GET ${url}chunks/${chunkFile(id)} failed after 3 attempts: HTTP 500`,
        );
        return true;
      },
    );
  });

  it("reports a 404 as a missing chunk with its URL, and refuses other statuses at once", async (t) => {
    let calls = 0;
    const url = await serve(t, (req, res) => {
      calls++;
      res.writeHead(req.url?.includes("forbidden") ? 403 : 404).end();
    });
    const reader = new HttpStoreReader(url, { backoffMs: 1 });
    t.after(() => reader.close());
    await assert.rejects(
      loadChunk({ reader, prefix: "chunks/" }, { id, size: data.length }),
      (err: Error) => {
        assert.ok(err instanceof ChunkMissingError);
        assert.match(err.message, new RegExp(`${url}chunks/${chunkFile(id)} does not exist`));
        return true;
      },
    );
    await assert.rejects(reader.read("forbidden"), {
      message: /forbidden answered HTTP 403, expected 200/,
    });
    assert.equal(calls, 2, "404 and 403 are not retried");
  });

  it("gives up on a server that never answers, naming the URL", async (t) => {
    const url = await serve(t, () => undefined);
    const reader = new HttpStoreReader(url, { backoffMs: 1, attempts: 2, timeoutMs: 200 });
    t.after(() => reader.close());
    await assert.rejects(reader.read("releases/index.json"), {
      message: /GET .*releases\/index\.json failed after 2 attempts: .*Timeout/i,
    });
  });

  it("keeps connections alive and fetches many chunks in parallel over few sockets", async (t) => {
    const sockets = new Set<unknown>();
    let inFlight = 0;
    let peak = 0;
    const url = await serve(t, (req, res) => {
      sockets.add(req.socket);
      inFlight++;
      peak = Math.max(peak, inFlight);
      setTimeout(() => {
        inFlight--;
        res.end(zstdCompressSync(data));
      }, 5);
    });
    const reader = new HttpStoreReader(url, { connections: 8 });
    t.after(() => reader.close());
    await Promise.all(
      Array.from({ length: 200 }, () =>
        loadChunk({ reader, prefix: "chunks/" }, { id, size: data.length }),
      ),
    );
    assert.ok(peak > 1 && peak <= 8, `peak parallel requests ${peak}`);
    assert.ok(sockets.size <= 8, `${sockets.size} sockets for 200 requests`);
  });
});
