// What one client (or many) may make the NBD server hold: CACHE counts in the in-flight
// budget, idle handshakes end at a deadline, connections are capped in all and per address,
// an export's `allow` owner gets its meta contexts, and clientsOf / onDisconnect report who is
// attached.
import assert from "node:assert/strict";
import { readdirSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { pino } from "pino";
import type { BlockDevice } from "../src/block/block-device.ts";
import { checkRange } from "../src/block/block-device.ts";
import { FileDevice } from "../src/block/file-device.ts";
import type { Logger } from "../src/lib/log.ts";
import * as P from "../src/nbd/protocol.ts";
import { NbdServer } from "../src/nbd/server.ts";
import type { NbdServerOptions } from "../src/nbd/server.ts";
import { requireTool, run, tempDir, textLike } from "./helpers.ts";
import { TestNbdClient } from "./nbd-client.ts";

const MiB = 1024 * 1024;

/** A device whose reads take a while and allocate what they return; it records the peak. */
class SlowDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  reading = 0;
  peak = 0;

  constructor(size: number) {
    this.size = size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    this.reading += length;
    this.peak = Math.max(this.peak, this.reading);
    const data = Buffer.alloc(length, 7); // touched: counts in RSS
    await new Promise((r) => setTimeout(r, 40));
    this.reading -= length;
    return data;
  }

  async close(): Promise<void> {}
}

async function tcpServer(
  t: TestContext,
  options: NbdServerOptions,
): Promise<{ server: NbdServer; port: number }> {
  const server = new NbdServer(options);
  const a = await server.listen({ host: "127.0.0.1", port: 0 });
  t.after(() => server.close());
  return { server, port: (a as { port: number }).port };
}

/** A raw TCP connection from `from` (any 127/8 address on Linux loopback). */
function rawConnect(t: TestContext, port: number, from = "127.0.0.1"): Socket {
  const s = connect({ port, host: "127.0.0.1", localAddress: from });
  s.on("error", () => undefined);
  t.after(() => s.destroy());
  return s;
}

const closed = (s: Socket): Promise<void> =>
  s.destroyed ? Promise.resolve() : new Promise((r) => s.once("close", () => r()));

/** Resolves true if `p` settles within `ms`, false otherwise. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p.then(() => true),
    new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ms))),
  ]);
  clearTimeout(timer);
  return r;
}

const openFds = (): number => readdirSync("/proc/self/fd").length;

/** A logger whose lines (parsed) land in an array. */
function captureLogger(): { logger: Logger; lines: { msg: string }[] } {
  const lines: { msg: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split("\n"))
        if (l) lines.push(JSON.parse(l) as { msg: string });
      cb();
    },
  });
  const logger: Logger = pino({ level: "info" }, stream);
  return { logger, lines };
}

describe("NBD in-flight budget", () => {
  it("counts CACHE requests: 32 x 32 MiB CACHE hold at most the per-connection budget", async (t) => {
    const device = new SlowDevice(64 * MiB);
    const { server, port } = await tcpServer(t, {
      exports: [{ name: "", device }],
      maxInFlightPerConnection: 64 * MiB,
    });
    const c = await TestNbdClient.connectTcp(port);
    t.after(() => c.close());
    const before = process.memoryUsage().rss;
    let peakRss = before;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }, 5);
    let peakInFlight = 0;
    const watcher = setInterval(() => {
      peakInFlight = Math.max(peakInFlight, server.inFlightBytes);
    }, 5);
    const replies = await Promise.all(
      Array.from({ length: 32 }, (_, i) =>
        c.request(P.NBD_CMD_CACHE, (i % 2) * 32 * MiB, 32 * MiB),
      ),
    );
    clearInterval(sampler);
    clearInterval(watcher);
    assert.ok(replies.every((r) => r.error === 0));
    const grown = (peakRss - before) / MiB;
    t.diagnostic(
      `device peak ${device.peak / MiB} MiB, server in flight peak ${peakInFlight / MiB} MiB, RSS +${grown.toFixed(0)} MiB`,
    );
    assert.ok(device.peak <= 64 * MiB, `the device was asked for ${device.peak / MiB} MiB at once`);
    assert.ok(peakInFlight > 0, "CACHE counted in the in-flight bytes");
    assert.ok(grown < 250, `RSS grew by ${grown.toFixed(0)} MiB`);
  });
});

describe("NBD connection limits", () => {
  it("closes connections that do not finish the handshake in time; attached ones may idle", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "d.img"), textLike(MiB));
    const device = await FileDevice.open(join(dir, "d.img"));
    t.after(() => device.close());
    const { server, port } = await tcpServer(t, {
      exports: [{ name: "", device }],
      handshakeTimeoutMs: 400,
      maxConnectionsPerAddress: 1000,
    });
    const attached = await TestNbdClient.connectTcp(port);
    t.after(() => attached.close());
    const fdsBefore = openFds();
    const idle: Socket[] = [];
    for (let i = 0; i < 300; i++) {
      const s = rawConnect(t, port);
      s.resume(); // reads the hello, then says nothing
      idle.push(s);
    }
    // Half of them send client flags and stall in the option phase; half stall before.
    await Promise.all(idle.map((s) => new Promise((r) => s.once("data", r))));
    for (const s of idle.slice(0, 150)) s.write(Buffer.from([0, 0, 0, 3]));
    const start = Date.now();
    const allClosed = await within(Promise.all(idle.map(closed)), 3000);
    assert.ok(allClosed, `${idle.filter((s) => !s.destroyed).length} idle connections still open`);
    t.diagnostic(`300 idle handshakes closed after ${Date.now() - start} ms`);
    assert.equal(server.stats.handshakeTimeouts, 300);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(openFds() <= fdsBefore + 5, `open fds ${fdsBefore} -> ${openFds()}`);
    // The attached client idled past the deadline too, and still works.
    assert.ok((await attached.readAt(0, 100)).equals(textLike(MiB).subarray(0, 100)));
  });

  it("caps connections in all and per address; past a cap a connection is closed at once, logged once", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "d.img"), textLike(MiB));
    const device = await FileDevice.open(join(dir, "d.img"));
    t.after(() => device.close());
    const { logger, lines } = captureLogger();
    const { server, port } = await tcpServer(t, {
      exports: [{ name: "", device }],
      maxConnections: 8,
      maxConnectionsPerAddress: 3,
      logger,
    });
    const hello = (s: Socket): Promise<boolean> =>
      within(new Promise((r) => s.once("data", r)), 1000);

    const first = [0, 1, 2].map(() => rawConnect(t, port, "127.0.0.1"));
    for (const s of first) assert.ok(await hello(s));
    // A 4th from the same address, and many more: closed without a hello.
    const extra = Array.from({ length: 50 }, () => rawConnect(t, port, "127.0.0.1"));
    assert.ok(await within(Promise.all(extra.map(closed)), 1000), "over the per-address cap");
    // Other addresses fill the server up to 8 in all.
    const others = ["127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"].map((a) =>
      rawConnect(t, port, a),
    );
    for (const s of others) assert.ok(await hello(s));
    const ninth = rawConnect(t, port, "127.0.0.4");
    assert.ok(await within(closed(ninth), 1000), "over the total cap");
    assert.equal(server.stats.refused, 51);
    const refusals = lines.filter((l) => l.msg.startsWith("nbd connection refused"));
    assert.equal(refusals.length, 2, "one line per reason, not one per connection");
    // A slot freed is a slot usable again.
    first[0].destroy();
    await new Promise((r) => setTimeout(r, 100));
    const c = await TestNbdClient.connectTcp(port);
    t.after(() => c.close());
    assert.ok((await c.readAt(0, 10)).equals(textLike(MiB).subarray(0, 10)));
  });
});

describe("NBD replies a client does not read", () => {
  it("a client sending options but never reading the replies is not buffered for", async (t) => {
    const device = new SlowDevice(MiB);
    // 20 exports with long names: each 16-byte NBD_OPT_LIST earns ~20 KB of reply.
    const exports = Array.from({ length: 20 }, (_, i) => ({
      name: `${i}-${"n".repeat(1000)}`,
      device,
    }));
    const { port } = await tcpServer(t, { exports, handshakeTimeoutMs: 60_000 });
    const s = rawConnect(t, port);
    await new Promise((r) => s.once("connect", r));
    s.write(Buffer.from([0, 0, 0, 3]));
    const list = Buffer.alloc(16);
    list.writeBigUInt64BE(P.NBD_OPTS_MAGIC, 0);
    list.writeUInt32BE(P.NBD_OPT_LIST, 8);
    const before = process.memoryUsage().rss;
    // 20,000 of them (320 KB), replies never read: 400 MB of replies if all were queued.
    for (let i = 0; i < 20; i++) s.write(Buffer.concat(Array.from({ length: 1000 }, () => list)));
    let peak = before;
    for (let i = 0; i < 40; i++) {
      await new Promise((r) => setTimeout(r, 25));
      peak = Math.max(peak, process.memoryUsage().rss);
    }
    const grown = (peak - before) / MiB;
    t.diagnostic(`RSS +${grown.toFixed(0)} MiB`);
    assert.ok(grown < 60, `RSS grew by ${grown.toFixed(0)} MiB`);
  });
});

describe("NBD exports with allow", () => {
  it("the rightful owner gets base:allocation (nbdinfo --map); another address gets nothing", async (t) => {
    if (!requireTool(t, "nbdinfo", "libnbd-bin")) return;
    const dir = tempDir(t);
    writeFileSync(join(dir, "d.img"), Buffer.concat([textLike(MiB), Buffer.alloc(MiB)]));
    const device = await FileDevice.open(join(dir, "d.img"));
    t.after(() => device.close());
    const { port } = await tcpServer(t, {
      exports: [
        {
          name: "owned",
          device,
          allow: (remote) => remote === "127.0.0.1" || remote === "::ffff:127.0.0.1",
        },
      ],
      defaultExport: false,
    });
    const r = await run("nbdinfo", ["--map", `nbd://127.0.0.1:${port}/owned`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\s*0\s+\d+\s+\d+\s+\S+/m, r.stdout);

    const c = await TestNbdClient.negotiating(rawConnect(t, port, "127.0.0.2"));
    const name = Buffer.from("owned");
    c.sendOption(P.NBD_OPT_LIST, Buffer.alloc(0));
    assert.equal((await c.readOptionReply()).type, P.NBD_REP_ACK, "no names listed");
    c.sendOption(P.NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0));
    assert.equal((await c.readOptionReply()).type, P.NBD_REP_ACK);
    const query = Buffer.from(P.BASE_ALLOCATION);
    const meta = Buffer.alloc(4 + name.length + 4 + 4 + query.length);
    meta.writeUInt32BE(name.length, 0);
    name.copy(meta, 4);
    meta.writeUInt32BE(1, 4 + name.length);
    meta.writeUInt32BE(query.length, 8 + name.length);
    query.copy(meta, 12 + name.length);
    for (const option of [P.NBD_OPT_LIST_META_CONTEXT, P.NBD_OPT_SET_META_CONTEXT]) {
      c.sendOption(option, meta);
      assert.equal((await c.readOptionReply()).type, P.NBD_REP_ERR_UNKNOWN);
    }
    await assert.rejects(c.go("owned"), /NBD_OPT_GO failed: 6/);
    c.close();
  });
});

describe("NBD clients per export", () => {
  it("clientsOf counts attached connections; onDisconnect reports each; removal keeps them attached", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "d.img"), textLike(MiB));
    const device = await FileDevice.open(join(dir, "d.img"));
    t.after(() => device.close());
    const gone: [string, string | undefined][] = [];
    const { server, port } = await tcpServer(t, {
      exports: [
        { name: "a", device },
        { name: "b", device },
      ],
      defaultExport: false,
      onDisconnect: (name, remote) => gone.push([name, remote]),
    });
    assert.equal(server.clientsOf("a"), 0);
    const a1 = await TestNbdClient.connectTcp(port, "a");
    const a2 = await TestNbdClient.connectTcp(port, "a");
    const b1 = await TestNbdClient.connectTcp(port, "b");
    const haggling = await TestNbdClient.negotiating(rawConnect(t, port));
    t.after(() => [a1, a2, b1, haggling].forEach((c) => c.close()));
    assert.deepEqual(
      [server.clientsOf("a"), server.clientsOf("b"), server.clientsOf("c")],
      [2, 1, 0],
      "connections still negotiating do not count",
    );
    a1.close();
    for (let i = 0; i < 50 && server.clientsOf("a") !== 1; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(server.clientsOf("a"), 1);
    assert.deepEqual(gone, [["a", "127.0.0.1"]]);
    // Removing the export stops new connections only: a2 keeps its device and still counts.
    server.removeExport("a");
    await assert.rejects(TestNbdClient.connectTcp(port, "a"), /NBD_OPT_GO failed: 6/);
    assert.ok((await a2.readAt(0, 10)).equals(textLike(MiB).subarray(0, 10)));
    assert.equal(server.clientsOf("a"), 1);
    haggling.close();
    b1.close();
    for (let i = 0; i < 50 && gone.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(gone[1], ["b", "127.0.0.1"], "a client that never attached is not reported");
    assert.equal(server.clientsOf("b"), 0);
  });
});
