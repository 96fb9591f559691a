// sendRanges with a device body: pieces read into reused buffers. Every response carries the
// device's bytes, whatever other responses did with the buffers before: concurrent clients, a
// client that leaves mid-body, a device that fails mid-body.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { connect } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { BlockIoError } from "../block/block-device.ts";
import type { BlockDevice } from "../block/block-device.ts";
import { FileDevice } from "../block/file-device.ts";
import { deviceStream, sendRanges } from "./send-file.ts";

it("sendRanges from a device: whole, ranges, concurrent clients, a client that leaves, a failing device", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "inetboot-send-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const data = randomBytes(5 * 1024 * 1024 + 12345);
  writeFileSync(join(dir, "body"), data);
  const file = await FileDevice.open(join(dir, "body"));
  t.after(() => file.close());
  let failAt = -1;
  const failing: BlockDevice = {
    size: file.size,
    readOnly: true,
    read: (o, l) => file.read(o, l),
    readInto: (o, into) =>
      failAt >= 0 && o >= failAt
        ? Promise.reject(new BlockIoError("damaged block"))
        : file.readInto(o, into),
    close: () => Promise.resolve(),
  };
  const errors: string[] = [];
  const server = createServer((req, res) => {
    const device = req.url === "/failing" ? failing : file;
    sendRanges(req, res, {
      size: device.size,
      etag: "x",
      stream: (s, e) => deviceStream(device, s, e),
      device,
    }).catch((err: Error) => errors.push(err.message));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const get = async (path: string, range?: string): Promise<Buffer> => {
    const res = await fetch(url + path, { headers: range ? { range } : {} });
    return Buffer.from(await res.arrayBuffer());
  };

  assert.ok((await get("/")).equals(data), "whole body");
  assert.ok((await get("/", "bytes=1048570-3145740")).equals(data.subarray(1048570, 3145741)));
  assert.ok((await get("/", "bytes=-10")).equals(data.subarray(data.length - 10)));
  const ranges = Array.from({ length: 12 }, (_, i) => [i * 400_000, i * 400_000 + 1_700_000]);
  const bodies = await Promise.all(ranges.map(([a, b]) => get("/", `bytes=${a}-${b}`)));
  bodies.forEach((b, i) =>
    assert.ok(b.equals(data.subarray(ranges[i][0], ranges[i][1] + 1)), `concurrent ${i}`),
  );

  // A client that reads one piece and leaves.
  const abort = new AbortController();
  const res = await fetch(url, { signal: abort.signal });
  const reader = res.body!.getReader();
  await reader.read();
  abort.abort();
  await new Promise((r) => setTimeout(r, 100));
  assert.ok((await get("/")).equals(data), "whole body after a client left");

  // A device failing past 2 MiB: the response is cut short, never padded with other bytes.
  failAt = 2 * 1024 * 1024;
  const cut = await fetch(`${url}/failing`)
    .then((r) => r.arrayBuffer())
    .then(
      (b) => Buffer.from(b),
      (err: Error) => err,
    );
  assert.ok(!Buffer.isBuffer(cut), "a body cut short is an error to the client");
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(
    errors.some((e) => /damaged block/.test(e)),
    errors.join("; "),
  );
  assert.ok((await get("/")).equals(data), "whole body after a failure");
});

it("clients that ask for a large body and never read it are not read ahead for: a few MiB each", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "inetboot-send-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const size = 256 * 1024 * 1024;
  writeFileSync(join(dir, "big"), "");
  truncateSync(join(dir, "big"), size); // sparse: costs no disk
  const file = await FileDevice.open(join(dir, "big"));
  t.after(() => file.close());
  let bytesRead = 0;
  const counted: BlockDevice = {
    size,
    readOnly: true,
    read: (o, l) => file.read(o, l),
    readInto: (o, into) => {
      bytesRead += into.length;
      return file.readInto(o, into);
    },
    close: () => Promise.resolve(),
  };
  const server = createServer((req, res) => {
    sendRanges(req, res, {
      size,
      etag: "big",
      stream: (s, e) => deviceStream(counted, s, e),
      device: counted,
    }).catch(() => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;

  const clients = 20;
  const sockets = await Promise.all(
    Array.from({ length: clients }, async () => {
      const s = connect(port, "127.0.0.1");
      await new Promise<void>((r) => s.once("connect", r));
      s.pause(); // never reads: the kernel's buffers fill, then the server's
      s.write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
      return s;
    }),
  );
  t.after(() => sockets.forEach((s) => s.destroy()));
  await new Promise((r) => setTimeout(r, 1500));
  const perClient = bytesRead / clients / (1024 * 1024);
  t.diagnostic(`${clients} stalled clients: ${perClient.toFixed(1)} MiB read for each`);
  // 256 MiB asked by each; the pump keeps 4 pieces of 1 MiB ahead of what the socket took,
  // and loopback's socket buffers take a few MiB more.
  assert.ok(perClient < 24, `${perClient.toFixed(1)} MiB read ahead per stalled client`);

  // The server still answers others at once.
  const started = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}/big`, { headers: { range: "bytes=0-65535" } });
  assert.equal((await res.arrayBuffer()).byteLength, 65536);
  assert.ok(performance.now() - started < 2000, "another client is served");
});
