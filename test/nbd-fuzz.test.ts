// The NBD server under thousands of random and mutated byte streams, in the handshake and after
// a valid NBD_OPT_GO. Whatever arrives: the process never sees an uncaught error, every
// connection ends (answered and closed) within a bound, nothing is left held (bytes in flight,
// attached clients, file descriptors), and a normal client works afterwards.
// Reproduce a run with NBD_FUZZ_SEED=<seed> (printed as a diagnostic).
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { describe, it } from "node:test";
import type { BlockDevice } from "../src/block/block-device.ts";
import { BufferDevice } from "../src/block/buffer-device.ts";
import { checkRange } from "../src/block/block-device.ts";
import * as P from "../src/nbd/protocol.ts";
import { NbdServer } from "../src/nbd/server.ts";
import { tempDir, textLike } from "./helpers.ts";
import { TestNbdClient } from "./nbd-client.ts";

const SIZE = 4 * 1024 * 1024;
const MAX_REQUEST = 256 * 1024;
const HANDSHAKE_MS = 1000;
/** Every connection must be closed by the server this long after the client is done. */
const END_BOUND_MS = HANDSHAKE_MS + 4000;

/** A writable in-memory device without writeZeroes (so the server's emulation is fuzzed too). */
class MemoryDevice implements BlockDevice {
  readonly size = SIZE;
  readonly readOnly = false;
  readonly data = Buffer.alloc(SIZE);

  read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    return Promise.resolve(Buffer.from(this.data.subarray(offset, offset + length)));
  }

  write(offset: number, data: Buffer): Promise<void> {
    checkRange(this, offset, data.length);
    data.copy(this.data, offset);
    return Promise.resolve();
  }

  trim(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    this.data.fill(0, offset, offset + length);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  async close(): Promise<void> {}
}

/** mulberry32: small, seeded, good enough to pick bytes. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  readonly rnd: () => number;
  constructor(seed: number) {
    this.rnd = prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  u32(): number {
    return this.pick([0, 1, 2, 4096, 65536, 65537, 2 ** 31, 2 ** 32 - 1, this.int(2 ** 32)]);
  }
}

const NAMES = ["", "rw", "ro", "secret", "nope", "x".repeat(5000)];
const OPTIONS = [
  P.NBD_OPT_EXPORT_NAME,
  P.NBD_OPT_ABORT,
  P.NBD_OPT_LIST,
  P.NBD_OPT_STARTTLS,
  P.NBD_OPT_INFO,
  P.NBD_OPT_GO,
  P.NBD_OPT_STRUCTURED_REPLY,
  P.NBD_OPT_LIST_META_CONTEXT,
  P.NBD_OPT_SET_META_CONTEXT,
];

function option(option: number, data: Buffer, declared = data.length): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(P.NBD_OPTS_MAGIC, 0);
  h.writeUInt32BE(option >>> 0, 8);
  h.writeUInt32BE(declared >>> 0, 12);
  return Buffer.concat([h, data]);
}

function infoPayload(g: Gen, name: string): Buffer {
  const n = Buffer.from(name);
  const count = g.chance(0.8) ? g.int(5) : g.pick([0xffff, 1000]);
  const reqs = Array.from({ length: g.chance(0.9) ? count : g.int(8) }, () =>
    g.chance(0.8) ? g.int(4) : g.int(0x10000),
  );
  const b = Buffer.alloc(4 + n.length + 2 + 2 * reqs.length);
  b.writeUInt32BE(g.chance(0.9) ? n.length : g.u32(), 0);
  n.copy(b, 4);
  b.writeUInt16BE(count, 4 + n.length);
  reqs.forEach((r, i) => b.writeUInt16BE(r, 6 + n.length + 2 * i));
  return b;
}

function metaPayload(g: Gen, name: string): Buffer {
  const queries = Array.from({ length: g.int(4) }, () =>
    g.pick([P.BASE_ALLOCATION, "base:", "qemu:dirty-bitmap:x", "", "a".repeat(g.int(300))]),
  );
  const parts: Buffer[] = [];
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    return b;
  };
  const n = Buffer.from(name);
  parts.push(u32(g.chance(0.9) ? n.length : g.u32()), n);
  parts.push(u32(g.chance(0.9) ? queries.length : g.u32()));
  for (const q of queries) {
    const qb = Buffer.from(q);
    parts.push(u32(g.chance(0.95) ? qb.length : g.u32()), qb);
  }
  return Buffer.concat(parts);
}

/** A random option: mostly known ones with plausible payloads, sometimes anything. */
function randomOption(g: Gen): Buffer {
  const op = g.chance(0.9) ? g.pick(OPTIONS) : g.chance(0.5) ? g.int(64) : g.u32();
  const name = g.pick(NAMES);
  let data: Buffer;
  switch (op) {
    case P.NBD_OPT_INFO:
    case P.NBD_OPT_GO:
      data = infoPayload(g, name);
      break;
    case P.NBD_OPT_LIST_META_CONTEXT:
    case P.NBD_OPT_SET_META_CONTEXT:
      data = metaPayload(g, name);
      break;
    case P.NBD_OPT_EXPORT_NAME:
      data = Buffer.from(name);
      break;
    default:
      data = g.chance(0.7) ? Buffer.alloc(0) : g.bytes(g.int(64));
  }
  if (g.chance(0.05)) {
    // A huge declared length, with only a little of it sent.
    return option(
      op,
      data.subarray(0, g.int(data.length + 1)),
      g.pick([2 ** 32 - 1, 2 ** 20, 65537]),
    );
  }
  return option(op, data, g.chance(0.95) ? data.length : g.u32());
}

function mutate(g: Gen, b: Buffer): Buffer {
  const out = Buffer.from(b);
  const flips = g.chance(0.5) ? 0 : 1 + g.int(4);
  for (let i = 0; i < flips && out.length > 0; i++) out[g.int(out.length)] = g.int(256);
  return g.chance(0.2) ? out.subarray(0, g.int(out.length + 1)) : out;
}

function clientFlags(g: Gen): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(g.chance(0.85) ? g.pick([1, 3]) : g.u32());
  return b;
}

/** A whole handshake of random options (mutated now and then). */
function optionStream(g: Gen): Buffer {
  const parts = [clientFlags(g)];
  for (let i = 0, n = 1 + g.int(8); i < n; i++) parts.push(randomOption(g));
  const s = Buffer.concat(parts);
  return g.chance(0.3) ? mutate(g, s) : s;
}

function request(g: Gen, type: number, offset: bigint, length: number, payload?: Buffer): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(g.chance(0.98) ? P.NBD_REQUEST_MAGIC : g.u32(), 0);
  h.writeUInt16BE(g.chance(0.8) ? g.pick([0, 0, 1, 2, 4, 8]) : g.int(0x10000), 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(g.int(2 ** 32)), 8);
  h.writeBigUInt64BE(offset, 16);
  h.writeUInt32BE(length >>> 0, 24);
  return payload ? Buffer.concat([h, payload]) : h;
}

/** A valid handshake to `name` (maybe with structured replies and base:allocation), then requests. */
function commandStream(g: Gen): { hello: Buffer; commands: Buffer } {
  const name = g.pick(["", "rw", "ro"]);
  const hello: Buffer[] = [Buffer.from([0, 0, 0, 3])];
  if (g.chance(0.6)) {
    hello.push(option(P.NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0)));
    if (g.chance(0.7)) {
      const n = Buffer.from(name);
      const q = Buffer.from(P.BASE_ALLOCATION);
      const m = Buffer.alloc(12 + n.length + q.length);
      m.writeUInt32BE(n.length, 0);
      n.copy(m, 4);
      m.writeUInt32BE(1, 4 + n.length);
      m.writeUInt32BE(q.length, 8 + n.length);
      q.copy(m, 12 + n.length);
      hello.push(option(P.NBD_OPT_SET_META_CONTEXT, m));
    }
  }
  const n = Buffer.from(name);
  const go = Buffer.alloc(6 + n.length);
  go.writeUInt32BE(n.length, 0);
  n.copy(go, 4);
  hello.push(option(P.NBD_OPT_GO, go));
  const cmds: Buffer[] = [];
  for (let i = 0, count = 1 + g.int(24); i < count; i++) {
    const type = g.chance(0.9) ? g.int(8) : g.int(0x10000);
    const offset = g.pick([
      0n,
      BigInt(g.int(SIZE)),
      BigInt(SIZE - 1),
      BigInt(SIZE),
      BigInt(SIZE + 4096),
      2n ** 53n,
      2n ** 63n,
      2n ** 64n - 1n,
    ]);
    const length = g.pick([
      0,
      1,
      512,
      g.int(65536),
      MAX_REQUEST,
      MAX_REQUEST + 1,
      2 ** 31,
      2 ** 32 - 1,
    ]);
    if (type === P.NBD_CMD_WRITE) {
      // Short payloads desync the stream on purpose; long declared ones end mid-payload.
      const sent =
        length <= MAX_REQUEST && g.chance(0.8) ? length : g.int(Math.min(length, 4096) + 1);
      cmds.push(request(g, type, offset, length, g.bytes(Math.min(sent, 4096)).subarray(0, sent)));
      if (sent < length) break;
    } else cmds.push(request(g, type, offset, length));
    if (type === P.NBD_CMD_DISC) break;
  }
  const commands = Buffer.concat(cmds);
  return { hello: Buffer.concat(hello), commands: g.chance(0.2) ? mutate(g, commands) : commands };
}

/**
 * Sends `bytes` (in a few random pieces), then either half-closes or, with `stall`, goes quiet.
 * Reads whatever comes back. Resolves when the connection closes; rejects past `bound`.
 */
function drive(path: string, g: Gen, bytes: Buffer[], stall: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    const start = Date.now();
    const timer = setTimeout(
      () => {
        s.destroy();
        reject(new Error(`connection still open after ${END_BOUND_MS} ms (stall=${stall})`));
      },
      END_BOUND_MS + (stall ? HANDSHAKE_MS : 0),
    );
    s.on("error", () => undefined);
    s.on("data", () => undefined); // read every reply
    s.on("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - start);
    });
    s.on("connect", () => {
      void (async () => {
        for (const b of bytes) {
          let at = 0;
          while (at < b.length && !s.destroyed) {
            const n = g.chance(0.7) ? b.length - at : 1 + g.int(b.length - at);
            s.write(b.subarray(at, at + n));
            at += n;
            if (g.chance(0.1)) await new Promise((r) => setImmediate(r));
          }
        }
        if (!stall && !s.destroyed) s.end();
      })();
    });
  });
}

async function pool<T>(items: T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

describe("NBD fuzzing", () => {
  it("survives thousands of random handshakes and command streams; a normal client works afterwards", async (t) => {
    const seed = Number(process.env.NBD_FUZZ_SEED ?? Date.now() % 2 ** 31);
    t.diagnostic(`NBD_FUZZ_SEED=${seed}`);
    const dir = tempDir(t);
    const errors: unknown[] = [];
    const onError = (err: unknown): void => void errors.push(err);
    process.on("unhandledRejection", onError);
    process.on("uncaughtException", onError);
    t.after(() => {
      process.off("unhandledRejection", onError);
      process.off("uncaughtException", onError);
    });
    const rw = new MemoryDevice();
    const ro = new BufferDevice(textLike(SIZE, 5));
    const server = new NbdServer({
      exports: [
        { name: "rw", device: rw },
        { name: "ro", device: ro, description: "read-only" },
        { name: "secret", device: ro, allow: () => false },
      ],
      maxRequestBytes: MAX_REQUEST,
      maxInFlightPerConnection: 4 * MAX_REQUEST,
      handshakeTimeoutMs: HANDSHAKE_MS,
    });
    const sock = join(dir, "s.sock");
    await server.listen({ path: sock });
    t.after(() => server.close());
    const fdsBefore = readdirSync("/proc/self/fd").length;
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();

    const g = new Gen(seed);
    type Case = { bytes: Buffer[]; stall: boolean };
    const cases: Case[] = [];
    for (let i = 0; i < 3000; i++) {
      const s = optionStream(g);
      // A few stop halfway through an option and go quiet: the deadline must end them.
      const stall = g.chance(0.03);
      cases.push({ bytes: [stall ? s.subarray(0, 4 + g.int(12)) : s], stall });
    }
    for (let i = 0; i < 1500; i++) {
      const { hello, commands } = commandStream(g);
      cases.push({ bytes: [hello, commands], stall: false });
    }
    // Shuffle, so handshakes and transmissions interleave.
    for (let i = cases.length - 1; i > 0; i--) {
      const j = g.int(i + 1);
      [cases[i], cases[j]] = [cases[j], cases[i]];
    }
    const started = Date.now();
    let slowest = 0;
    const failures: string[] = [];
    await pool(cases, 32, async (c) => {
      try {
        slowest = Math.max(slowest, await drive(sock, g, c.bytes, c.stall));
      } catch (err) {
        failures.push(
          `${(err as Error).message}: ${c.bytes.map((b) => b.toString("hex").slice(0, 200)).join(" | ")}`,
        );
      }
    });
    delay.disable();
    t.diagnostic(
      `${cases.length} connections in ${Date.now() - started} ms; slowest ${slowest} ms; ` +
        `event loop delay max ${(delay.max / 1e6).toFixed(0)} ms; stats ${JSON.stringify(server.stats)}`,
    );
    assert.deepEqual(failures.slice(0, 5), []);
    assert.deepEqual(errors, []);
    assert.ok(delay.max / 1e6 < 2000, `event loop blocked for ${delay.max / 1e6} ms`);

    // Nothing held: no bytes in flight, nobody attached, descriptors back.
    for (let i = 0; i < 100 && server.inFlightBytes !== 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.inFlightBytes, 0);
    assert.deepEqual(
      ["", "rw", "ro", "secret"].map((n) => server.clientsOf(n)),
      [0, 0, 0, 0],
    );
    assert.ok(readdirSync("/proc/self/fd").length <= fdsBefore + 5);

    // And a well-behaved client still gets correct data.
    const c = await TestNbdClient.connect(sock, "ro");
    t.after(() => c.close());
    assert.ok((await c.readAt(4096, 8192)).equals(textLike(SIZE, 5).subarray(4096, 12288)));
    const w = await TestNbdClient.connect(sock, "rw");
    t.after(() => w.close());
    assert.equal((await w.write(8192, Buffer.from("hello"))).error, 0);
    assert.equal((await w.readAt(8192, 5)).toString(), "hello");
  });
});
