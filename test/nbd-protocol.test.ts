// The NBD server under abuse: bad requests get the protocol's error and the connection stays
// usable; garbage in the handshake closes that connection only. Plus tracing and prefetch.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { FileDevice } from "../src/block/file-device.ts";
import { decodeProfile } from "../src/store/profile.ts";
import * as P from "../src/nbd/protocol.ts";
import { NbdServer } from "../src/nbd/server.ts";
import { startAttach } from "./attach.ts";
import { inetbootOk, tempDir, textLike } from "./helpers.ts";
import { TestNbdClient } from "./nbd-client.ts";

/** A file device closed when the test ends (the server does not own its exports' devices). */
async function openDevice(t: TestContext, path: string): Promise<FileDevice> {
  const device = await FileDevice.open(path);
  t.after(() => device.close());
  return device;
}

describe("NBD server robustness", () => {
  it("answers bad requests with errors and keeps the connection usable", async (t) => {
    const dir = tempDir(t);
    const data = randomBytes(1 << 20);
    writeFileSync(join(dir, "d.img"), data);
    const server = new NbdServer({
      exports: [{ name: "ro", device: await openDevice(t, join(dir, "d.img")) }],
      maxRequestBytes: 256 * 1024,
    });
    const sock = join(dir, "s.sock");
    await server.listen({ path: sock });
    t.after(() => server.close());
    const c = await TestNbdClient.connect(sock, "ro");
    t.after(() => c.close());
    assert.equal(c.size, data.length);
    assert.ok((c.flags & P.NBD_FLAG_READ_ONLY) !== 0);

    assert.equal(
      (await c.request(P.NBD_CMD_READ, data.length - 10, 20)).error,
      P.NBD_EINVAL,
      "read past the end",
    );
    assert.equal(
      (await c.request(P.NBD_CMD_READ, 0, 1 << 20)).error,
      P.NBD_EOVERFLOW,
      "oversized read",
    );
    assert.equal(
      (await c.request(P.NBD_CMD_WRITE, 0, 4, { data: Buffer.from("nope") })).error,
      P.NBD_EPERM,
      "write to read-only",
    );
    assert.equal(
      (await c.request(P.NBD_CMD_WRITE, 0, 300 * 1024, { data: Buffer.alloc(300 * 1024) })).error,
      P.NBD_EINVAL,
      "oversized write",
    );
    assert.equal((await c.request(99, 0, 0)).error, P.NBD_EINVAL, "unknown command");
    assert.equal(
      (await c.request(P.NBD_CMD_TRIM, 0, 4096)).error,
      P.NBD_EPERM,
      "trim on read-only",
    );
    // Still in sync: many reads in flight at once, answered out of order, all correct.
    const offsets = Array.from({ length: 64 }, () =>
      Math.floor(Math.random() * (data.length - 4096)),
    );
    const got = await Promise.all(offsets.map((o) => c.readAt(o, 4096)));
    offsets.forEach((o, i) => assert.ok(got[i].equals(data.subarray(o, o + 4096))));
  });

  it("closes only the connection that sends garbage; others keep working", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "d.img"), textLike(1 << 20));
    const server = new NbdServer({
      exports: [{ name: "", device: await openDevice(t, join(dir, "d.img")) }],
    });
    const sock = join(dir, "s.sock");
    await server.listen({ path: sock });
    t.after(() => server.close());
    const good = await TestNbdClient.connect(sock);
    t.after(() => good.close());

    for (const garbage of [
      Buffer.from("GET / HTTP/1.1\r\n\r\n"),
      Buffer.concat([Buffer.from([0, 0, 0, 3]), randomBytes(200)]),
      Buffer.from([0, 0, 0, 0x80]),
    ]) {
      const bad = connect(sock);
      const closed = new Promise<void>((r) => bad.on("close", () => r()));
      bad.on("error", () => undefined);
      bad.resume(); // read the handshake, so the FIN that follows is seen
      bad.on("connect", () => bad.write(garbage));
      await closed;
    }
    // An unknown export in NBD_OPT_GO is an error reply, not a dead server.
    await assert.rejects(TestNbdClient.connect(sock, "no-such-export"), /NBD_OPT_GO failed: 6/);
    assert.ok((await good.readAt(0, 100)).equals(textLike(1 << 20).subarray(0, 100)));
  });
});

describe("NBD exports that belong to one machine each", () => {
  it("without a default export, the empty name and other names get nothing", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "d.img"), textLike(1 << 20));
    const server = new NbdServer({ exports: [], defaultExport: false });
    const sock = join(dir, "s.sock");
    await server.listen({ path: sock });
    t.after(() => server.close());
    server.setExport({
      name: "debian-52-54-00-00-00-01",
      device: await openDevice(t, join(dir, "d.img")),
    });
    await assert.rejects(TestNbdClient.connect(sock, ""), /NBD_OPT_GO failed: 6/);
    await assert.rejects(
      TestNbdClient.connect(sock, "debian-52-54-00-00-00-02"),
      /NBD_OPT_GO failed: 6/,
    );
    const own = await TestNbdClient.connect(sock, "debian-52-54-00-00-00-01");
    t.after(() => own.close());
    assert.ok((await own.readAt(0, 100)).equals(textLike(1 << 20).subarray(0, 100)));
    server.removeExport("debian-52-54-00-00-00-01");
    await assert.rejects(
      TestNbdClient.connect(sock, "debian-52-54-00-00-00-01"),
      /NBD_OPT_GO failed: 6/,
    );
  });
});

describe("NBD server limits and transports", () => {
  it("back-pressures a client that sends requests but never reads replies", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "d.img"), Buffer.alloc(64 << 20));
    const limit = 4 << 20;
    const server = new NbdServer({
      exports: [{ name: "", device: await openDevice(t, join(dir, "d.img")) }],
      maxInFlightPerConnection: limit,
    });
    const sock = join(dir, "s.sock");
    await server.listen({ path: sock });
    t.after(() => server.close());
    const c = await TestNbdClient.connect(sock);
    t.after(() => c.close());
    c.socket.pause(); // never read a reply
    for (let i = 0; i < 400; i++)
      void c.request(P.NBD_CMD_READ, (i % 64) << 20, 1 << 20).catch(() => undefined);
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 50));
      peak = Math.max(peak, server.inFlightBytes);
    }
    // 400 MiB were asked for; the server holds at most its cap plus one request.
    assert.ok(peak <= limit + (1 << 20), `server held ${peak} bytes in flight`);
    const rss = process.memoryUsage().rss;
    assert.ok(rss < 400 * 1024 * 1024, `test process RSS ${rss}`);
  });

  it("listens on TCP too and prints a usable nbd:// URI", async (t) => {
    const dir = tempDir(t);
    const data = textLike(1 << 20, 8);
    writeFileSync(join(dir, "disk.img"), data);
    const a = await startAttach(t, [
      join(dir, "disk.img"),
      "--listen",
      "tcp:127.0.0.1:0",
      "--export",
      "disk",
    ]);
    const m = /^nbd:\/\/127\.0\.0\.1:(\d+)\/disk$/.exec(a.uri);
    assert.ok(m, a.uri);
    const c = await TestNbdClient.connectTcp(Number(m[1]), "disk");
    assert.ok((await c.readAt(1000, 5000)).equals(data.subarray(1000, 6000)));
    c.close();
    await a.stop();
  });
});

describe("tracing and prefetch through attach", () => {
  it("--trace records first accesses in order; --profile prefetches them into the cache", async (t) => {
    const dir = tempDir(t);
    const data = Buffer.concat([textLike(3_000_000, 41), randomBytes(1_000_000)]);
    writeFileSync(join(dir, "disk.img"), data);
    await inetbootOk([
      "pack",
      join(dir, "disk.img"),
      "--store",
      join(dir, "store"),
      "--name",
      "disk",
    ]);
    const common = ["disk", "--store", join(dir, "store"), "--insecure", "--state", join(dir, "s")];
    const sock = join(dir, "a.sock");
    const profile = join(dir, "boot.profile");
    const a = await startAttach(t, [...common, "--trace", profile, "--listen", `unix:${sock}`]);
    const c = await TestNbdClient.connect(sock);
    const reads: [number, number][] = [
      [2_000_000, 8192],
      [0, 4096],
      [3_500_000, 100_000],
      [0, 4096], // again: not a first access
      [2_004_096, 4096], // inside blocks the first read touched: not new
      [2_012_000, 4096], // beyond them: new
    ];
    for (const [o, l] of reads) await c.readAt(o, l);
    c.close();
    await a.stop();
    const entries = decodeProfile(readFileSync(profile, "utf8"));
    assert.deepEqual(
      entries.map((e) => [e.offset, e.length]),
      [
        [2_000_000 - (2_000_000 % 4096), 12288],
        [0, 4096],
        [3_497_984, 102_400],
        [2_011_136, 8192],
      ],
    );

    const cache = join(dir, "cache");
    const b = await startAttach(t, [
      ...common,
      "--profile",
      profile,
      "--cache",
      cache,
      "--listen",
      `unix:${sock}`,
    ]);
    // Without a single demand read, the profile's chunks arrive in the cache.
    type Status = { offline: { canBootOffline: boolean; chunksNeeded: number } };
    let status = null as Status | null;
    for (let i = 0; i < 100; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = JSON.parse(
        (
          await inetbootOk([
            "cache",
            "status",
            "--cache",
            cache,
            "--can-boot-offline",
            "disk",
            "--profile",
            profile,
            "--json",
          ]).catch(() => ({ stdout: "null" }))
        ).stdout,
      ) as Status | null;
      if (status?.offline.canBootOffline) break;
    }
    assert.equal(
      status?.offline.canBootOffline,
      true,
      `prefetch did not fill the cache: ${JSON.stringify(status)}`,
    );
    assert.ok(status.offline.chunksNeeded >= 3);
    await b.stop();
  });
});
