// A misbehaving origin for fault tests: serves a store folder like a static web server, but
// chunk files (*.cacnk) come back corrupt, as 500s, truncated, stalled, or with the
// connection cut mid-body. Everything else (releases, indexes) is served correctly.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, normalize } from "node:path";
import type { Cleanup } from "./helpers.ts";

export type FaultMode = "corrupt" | "error500" | "truncated" | "stall" | "cut";

export interface FaultyOrigin {
  url: string;
  chunkRequests: () => number;
  close: () => Promise<void>;
}

export async function startFaultyOrigin(
  t: Cleanup,
  root: string,
  mode: FaultMode,
): Promise<FaultyOrigin> {
  let chunkRequests = 0;
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    let body: Buffer;
    try {
      body = readFileSync(join(root, path));
    } catch {
      res.writeHead(404).end();
      return;
    }
    if (!path.endsWith(".cacnk")) {
      res
        .writeHead(200, { "content-length": body.length })
        .end(req.method === "HEAD" ? undefined : body);
      return;
    }
    chunkRequests++;
    switch (mode) {
      case "corrupt": {
        const bad = Buffer.from(body);
        bad[bad.length >> 1] ^= 0x20;
        res.writeHead(200, { "content-length": bad.length }).end(bad);
        return;
      }
      case "error500":
        res.writeHead(500).end("internal error");
        return;
      case "truncated":
        res.writeHead(200, { "content-length": body.length });
        res.write(body.subarray(0, body.length >> 1));
        res.socket?.destroy();
        return;
      case "stall":
        return; // never answers
      case "cut":
        res.writeHead(200, { "content-length": body.length });
        res.write(body.subarray(0, 10));
        setTimeout(() => res.socket?.destroy(), 50);
        return;
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const close = async (): Promise<void> => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  t.after(close);
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    chunkRequests: () => chunkRequests,
    close,
  };
}
