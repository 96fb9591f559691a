// The TFTP server under load it must bound (requests are spoofable UDP): netascii is converted
// block by block (no whole-file buffers, no long event-loop stalls), transfers are capped in
// total and per client ("server busy" past the cap), and a client's timeout option cannot keep
// a transfer alive for minutes.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { it } from "node:test";
import type { TestContext } from "node:test";
import { decodeTftp, encodeTftp, Op } from "../src/tftp/protocol.ts";
import type { TftpPacket } from "../src/tftp/protocol.ts";
import { TFTP_BUSY_MESSAGE, TftpServer } from "../src/tftp/server.ts";
import type { TftpServerOptions } from "../src/tftp/server.ts";
import { VirtualTree } from "../src/tftp/tree.ts";
import { requireTool, run, tempDir } from "./helpers.ts";

async function tftpServer(
  t: TestContext,
  root: string,
  extra: Partial<TftpServerOptions> = {},
): Promise<TftpServer> {
  const server = new TftpServer({
    tree: new VirtualTree(root),
    port: 0,
    address: "127.0.0.1",
    ...extra,
  });
  await server.start();
  t.after(() => server.stop());
  return server;
}

async function udp(t: TestContext, address = "127.0.0.1"): Promise<Socket> {
  const s = createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, address, () => r()));
  t.after(() => s.close());
  return s;
}

/** The netascii conversion, done here independently of the server (RFC 764). */
function netascii(text: Buffer): Buffer {
  const out: Buffer[] = [];
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c !== 0x0a && c !== 0x0d) continue;
    out.push(text.subarray(from, i), Buffer.from(c === 0x0a ? "\r\n" : "\r\0", "latin1"));
    from = i + 1;
  }
  out.push(text.subarray(from));
  return Buffer.concat(out);
}

const openFds = (): number => readdirSync("/proc/self/fd").length;

it(
  "netascii RRQs for a 16 MB file: no event-loop stall, bounded memory, right bytes (curl -B)",
  { timeout: 120_000 },
  async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const dir = tempDir(t);
    // Text lines with LFs, CRLFs and bare CRs, 16 MiB (the old code's largest netascii file).
    const line = Buffer.from("kernel /vmlinuz root=/dev/nbd0 quiet\nline two\r\nbare\rcr\n");
    const text = Buffer.alloc(16 * 1024 * 1024);
    for (let o = 0; o < text.length; o += line.length) line.copy(text, o);
    writeFileSync(join(dir, "big.txt"), text);
    const expected = netascii(text);
    const server = await tftpServer(t, dir);
    const N = 4;
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    let rssMax = rssBefore;
    const sampler = setInterval(() => {
      rssMax = Math.max(rssMax, process.memoryUsage().rss);
    }, 20);
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        // (At the lowest priority: on a small machine the clients must not starve the server.)
        run("nice", [
          "-n19",
          "curl",
          "-sS",
          "-B",
          "--tftp-blksize",
          "8192",
          "-o",
          join(dir, `out${i}`),
          `tftp://127.0.0.1:${server.port}/big.txt`,
        ]),
      ),
    );
    delay.disable();
    clearInterval(sampler);
    const stallMs = delay.max / 1e6;
    const rssGrowthMb = (rssMax - rssBefore) / 2 ** 20;
    t.diagnostic(
      `p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms; ` +
        `${N} netascii transfers of 16 MiB in ${Math.round(performance.now() - started)} ms: ` +
        `max event-loop delay ${stallMs.toFixed(1)} ms, RSS growth ${rssGrowthMb.toFixed(1)} MB`,
    );
    for (const [i, r] of results.entries()) {
      assert.equal(r.code, 0, r.stderr);
      const got = readFileSync(join(dir, `out${i}`));
      assert.equal(got.length, expected.length, `transfer ${i} length`);
      assert.ok(got.equals(expected), `transfer ${i} bytes`);
    }
    // Before streaming, the four requests (arriving together) held the loop 4.3 s in one
    // piece. The bound leaves room for a loaded 2-core CI machine (a QEMU suite runs beside
    // this one: 470 ms was seen with the machine at load 15); the soak bench measures the
    // server's own stall under a LAN flood against 100 ms.
    assert.ok(stallMs < 1500, `event loop stalled ${stallMs.toFixed(1)} ms`);
    // RSS counts garbage not yet collected: 105 MB was seen with QEMU suites beside this one on
    // 2 cores (the transfers stream; whole-file buffering would be N × 16 MiB × 2 and more).
    assert.ok(rssGrowthMb < 160, `RSS grew ${rssGrowthMb.toFixed(1)} MB`);
    assert.equal(server.stats.completed, N);
  },
);

it("netascii: tsize is not offered (the size is not known without converting the whole file)", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "a.txt"), "one\ntwo\n");
  const server = await tftpServer(t, dir);
  const client = await udp(t);
  const got = new Promise<TftpPacket>((r) => client.once("message", (m) => r(decodeTftp(m))));
  const options = new Map([
    ["tsize", "0"],
    ["blksize", "1024"],
  ]);
  client.send(
    encodeTftp({ op: Op.RRQ, filename: "a.txt", mode: "netascii", options }),
    server.port,
    "127.0.0.1",
  );
  const oack = await got;
  assert.equal(oack.op, Op.OACK);
  assert.deepEqual(oack.op === Op.OACK && [...oack.options], [["blksize", "1024"]]);
});

it(
  "600 requests from 40 sources: open fds stay bounded, 20 wait for a slot (a resent request keeps its place), later ones get 'server busy', then service resumes",
  { timeout: 60_000 },
  async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const dir = tempDir(t);
    writeFileSync(join(dir, "f.bin"), Buffer.alloc(50_000, 7));
    const maxTransfers = 256;
    // Unanswered transfers give up after one 1 s timeout (and only then may make way).
    const server = await tftpServer(t, dir, {
      timeoutMs: 1000,
      retries: 0,
      maxTransfers,
      maxQueued: 20,
    });
    // 40 source addresses (127.0.0.10-49): 8 each would be 320 transfers, over the total cap.
    const senders = await Promise.all(
      Array.from({ length: 40 }, (_, i) => udp(t, `127.0.0.${10 + i}`)),
    );
    const busy: string[] = [];
    for (const s of senders) {
      s.on("message", (m) => {
        const p = decodeTftp(m);
        if (p.op === Op.ERROR && p.message === TFTP_BUSY_MESSAGE) busy.push(p.message);
      });
    }
    const baseline = openFds();
    let maxFds = baseline;
    let maxActive = 0;
    const sampler = setInterval(() => {
      maxFds = Math.max(maxFds, openFds());
      maxActive = Math.max(maxActive, server.stats.active);
    }, 5);
    const rrq = encodeTftp({ op: Op.RRQ, filename: "f.bin", mode: "octet", options: new Map() });
    for (let i = 0; i < 600; i++) {
      senders[i % senders.length].send(rrq, server.port, "127.0.0.1");
      if (i % 50 === 49) await new Promise((r) => setTimeout(r, 2));
    }
    await new Promise((r) => setTimeout(r, 150));
    // Each transfer holds a socket and the file: two descriptors, plus a few closing sockets.
    const bound = baseline + 2 * maxTransfers + 32;
    // The flood is never answered: every transfer gives up after 1 s.
    const until = Date.now() + 10_000;
    while ((server.stats.active > 0 || server.stats.waiting > 0) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
    }
    clearInterval(sampler);
    t.diagnostic(
      `fds: baseline ${baseline}, max ${maxFds} (bound ${bound}); max active ${maxActive}; ` +
        `busy errors ${busy.length}; stats ${JSON.stringify(server.stats)}`,
    );
    assert.ok(maxFds <= bound, `open fds reached ${maxFds}, bound ${bound}`);
    assert.ok(maxActive <= maxTransfers, `active transfers reached ${maxActive}`);
    assert.ok(busy.length > 0, "no request was told the server is busy");
    // Each sender is one port: its later requests are resends of the queued one, not new ones.
    assert.equal(server.stats.queued, 20, "the queue held 20 requests, no more");
    assert.equal(busy.length, server.stats.busy);
    assert.equal(server.stats.active, 0);
    assert.equal(server.stats.waiting, 0);
    const out = join(dir, "out.bin");
    const r = await run("curl", ["-sS", "-o", out, `tftp://127.0.0.1:${server.port}/f.bin`]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(out), Buffer.alloc(50_000, 7));
  },
);

it("at the cap, requests wait for a slot instead of failing: 8 clients, 2 transfers at once, all served", async (t) => {
  if (!requireTool(t, "curl", "curl")) return;
  const dir = tempDir(t);
  const data = Buffer.alloc(300_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 255;
  writeFileSync(join(dir, "f.bin"), data);
  const server = await tftpServer(t, dir, { maxTransfers: 2 });
  const results = await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      run("curl", ["-sS", "-o", join(dir, `out${i}`), `tftp://127.0.0.1:${server.port}/f.bin`]),
    ),
  );
  for (const [i, r] of results.entries()) {
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(join(dir, `out${i}`)), data);
  }
  assert.ok(server.stats.queued >= 1, `some waited: ${JSON.stringify(server.stats)}`);
  assert.equal(server.stats.busy, 0);
  assert.equal(server.stats.completed, 8);
});

it("timeout=255 is not acknowledged, and an unanswered transfer gives up within the bound", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "f.bin"), Buffer.alloc(5000, 1));
  const server = await tftpServer(t, dir, { timeoutMs: 200, retries: 2 });
  const client = await udp(t);
  const packets: TftpPacket[] = [];
  let seen: (port: number) => void = () => {};
  const firstPort = new Promise<number>((r) => (seen = r));
  client.on("message", (m, from) => {
    packets.push(decodeTftp(m));
    seen(from.port);
  });
  const options = new Map([
    ["timeout", "255"],
    ["blksize", "1024"],
  ]);
  const started = performance.now();
  client.send(
    encodeTftp({ op: Op.RRQ, filename: "f.bin", mode: "octet", options }),
    server.port,
    "127.0.0.1",
  );
  // Never acknowledged: OACK, resent twice (200 + 400 ms), then given up after 800 ms more:
  // 1.4 s. Honouring timeout=255 would take minutes; the slack is for timers that fire late
  // while another test file loads the same two cores (CI saw 3.3 s once with a 1.9 s bound).
  const bound = 200 + 400 + 800 + 3600;
  while (server.stats.failed === 0 && performance.now() - started < 10_000) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const gaveUpMs = performance.now() - started;
  t.diagnostic(
    `gave up after ${Math.round(gaveUpMs)} ms; packets ${packets.map((p) => p.op).join(",")}`,
  );
  const oack = packets[0];
  assert.equal(oack.op, Op.OACK);
  assert.deepEqual(oack.op === Op.OACK && [...oack.options], [["blksize", "1024"]]);
  assert.equal(server.stats.failed, 1);
  assert.ok(gaveUpMs < bound, `gave up after ${gaveUpMs} ms, bound ${bound}`);

  // A timeout within the limit (10 s) is echoed as RFC 2349 asks. The first transfer's last
  // word (its ERROR on giving up) may still be on its way from that transfer's port: the answer
  // to this request comes from a new one.
  const oldPort = await firstPort;
  const got = new Promise<TftpPacket>((r) => {
    const onMessage = (m: Buffer, from: { port: number }): void => {
      if (from.port === oldPort) return;
      client.off("message", onMessage);
      r(decodeTftp(m));
    };
    client.on("message", onMessage);
  });
  client.send(
    encodeTftp({
      op: Op.RRQ,
      filename: "f.bin",
      mode: "octet",
      options: new Map([["timeout", "10"]]),
    }),
    server.port,
    "127.0.0.1",
  );
  const ok = await got;
  assert.deepEqual(ok.op === Op.OACK && [...ok.options], [["timeout", "10"]]);
});

it("a transfer is abandoned at maxTransferMs however the client paces its ACKs", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "f.bin"), Buffer.alloc(512 * 100, 1));
  const server = await tftpServer(t, dir, { maxTransferMs: 500 });
  const client = await udp(t);
  let last: TftpPacket | undefined;
  let done = false;
  t.after(() => (done = true));
  client.on("message", (m, rinfo) => {
    last = decodeTftp(m);
    // A slow drip: each block acknowledged 100 ms later (under the 1 s retransmit timeout).
    if (last.op === Op.DATA) {
      const block = last.block;
      setTimeout(() => {
        if (!done) client.send(encodeTftp({ op: Op.ACK, block }), rinfo.port, rinfo.address);
      }, 100);
    }
  });
  client.send(
    encodeTftp({ op: Op.RRQ, filename: "f.bin", mode: "octet", options: new Map() }),
    server.port,
    "127.0.0.1",
  );
  const started = performance.now();
  while (server.stats.failed === 0 && performance.now() - started < 5000) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(server.stats.failed, 1);
  // Uncapped, the drip takes 10 s; the slack past 500 ms is for late timers on a loaded machine.
  const tookMs = performance.now() - started;
  assert.ok(tookMs < 4000, `abandoned after ${Math.round(tookMs)} ms`);
  // The ERROR datagram may land a moment after the server counted the failure.
  for (let i = 0; i < 50 && last?.op !== Op.ERROR; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(last?.op, Op.ERROR);
});
