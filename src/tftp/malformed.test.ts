// Malformed TFTP packets and option values: decoding throws only TftpDecodeError, negotiation
// stays within bounds for any option values, and a server fed such datagrams logs (a bounded
// number of lines), drops or answers them with ERROR, and still serves.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import fc from "fast-check";
import type { Logger } from "../lib/log.ts";
import {
  decodeTftp,
  encodeTftp,
  MAX_BLKSIZE,
  MAX_TIMEOUT_SECONDS,
  negotiate,
  Op,
  TftpDecodeError,
} from "./protocol.ts";
import type { TftpPacket } from "./protocol.ts";
import { TftpServer } from "./server.ts";
import { VirtualTree } from "./tree.ts";

const OPTION_NAMES = ["blksize", "tsize", "timeout", "windowsize", "BLKSIZE", "x"];
const optionValue = fc.oneof(
  fc.constantFrom("0", "1", "7", "8", "65464", "65465", "99999999999", "-1", "", "1e3", "0x10"),
  fc.string({ maxLength: 12 }),
  fc.nat().map(String),
);

it("decodeTftp throws only TftpDecodeError, whatever the bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
      try {
        decodeTftp(Buffer.from(bytes));
      } catch (err) {
        assert.ok(err instanceof TftpDecodeError, String(err));
      }
    }),
    { numRuns: 2000 },
  );
});

it("negotiate keeps blksize, windowsize and timeout within bounds for any option values", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom(...OPTION_NAMES), optionValue), { maxLength: 8 }),
      (pairs) => {
        const options = new Map(pairs.map(([k, v]) => [k.toLowerCase(), v]));
        const n = negotiate(options, {
          maxBlksize: 8192,
          maxWindowsize: 16,
          defaultTimeoutMs: 1000,
          size: 1234,
        });
        assert.ok(
          n.blksize >= 8 && n.blksize <= Math.min(8192, MAX_BLKSIZE),
          `blksize ${n.blksize}`,
        );
        assert.ok(n.windowsize >= 1 && n.windowsize <= 16, `windowsize ${n.windowsize}`);
        assert.ok(n.timeoutMs >= 1000 && n.timeoutMs <= MAX_TIMEOUT_SECONDS * 1000);
        for (const [k, v] of n.accepted) assert.match(v, /^\d+$/, `${k}=${v}`);
      },
    ),
    { numRuns: 2000 },
  );
  // Named cases: zero, huge and non-numeric values are left out of the OACK.
  const limits = { maxBlksize: 8192, maxWindowsize: 16, defaultTimeoutMs: 1000, size: 1 };
  for (const [k, v] of [
    ["blksize", "0"],
    ["blksize", "99999999999"],
    ["blksize", "abc"],
    ["windowsize", "0"],
    ["timeout", "0"],
    ["timeout", "255"],
  ]) {
    assert.equal(negotiate(new Map([[k, v]]), limits).accepted.size, 0, `${k}=${v}`);
  }
});

it("a server fed malformed datagrams logs boundedly, never crashes, and still serves", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tftp-malformed-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "f.bin"), Buffer.alloc(3000, 5));
  const lines: string[] = [];
  const log = (level: string) => (_o: unknown, msg?: string) => lines.push(`${level} ${msg}`);
  const logger = {
    warn: log("warn"),
    error: log("error"),
    info: () => undefined,
    debug: () => undefined,
  } as unknown as Logger;
  const server = new TftpServer({
    tree: new VirtualTree(dir),
    port: 0,
    address: "127.0.0.1",
    timeoutMs: 100,
    retries: 0,
    logger,
  });
  await server.start();
  t.after(() => server.stop());
  const client = createSocket("udp4");
  await new Promise<void>((r) => client.bind(0, "127.0.0.1", () => r()));
  t.after(() => client.close());
  const rrq = (options: [string, string][]): Buffer =>
    encodeTftp({ op: Op.RRQ, filename: "f.bin", mode: "octet", options: new Map(options) });
  const bad: Buffer[] = [
    Buffer.from([0, 1, 0x66]), // missing NUL
    Buffer.from("\x00\x01f.bin\x00octet", "latin1"), // mode not terminated
    Buffer.from("\x00\x01f.bin\x00octet\x00blksize\x00", "latin1"), // option without value
    Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(65_000, 0x41), Buffer.from([0])]), // 65 KB
    Buffer.from("\x00\x01\x00octet\x00", "latin1"), // empty filename
    Buffer.from([0, 9, 0, 0]), // unknown opcode
    Buffer.from([0, 2]), // short
    rrq([["blksize", "0"]]),
    rrq([["blksize", "99999999999"]]),
    rrq([["blksize", "abc"]]),
    rrq([["windowsize", "0"]]),
    Buffer.from("\x00\x01f.bin\x00octet\x00blksize\x00512\x00BLKSIZE\x001024\x00", "latin1"),
    Buffer.from("\x00\x01f.bin\x00mail\x00", "latin1"), // unsupported mode
    Buffer.from("\x00\x02up.bin\x00octet\x00", "latin1"), // write
    encodeTftp({ op: Op.RRQ, filename: "x".repeat(5000), mode: "octet", options: new Map() }),
  ];
  const fuzz = fc.sample(fc.uint8Array({ maxLength: 600 }), 500).map((b) => Buffer.from(b));
  for (const [i, p] of [...bad, ...bad, ...fuzz].entries()) {
    client.send(p, server.port, "127.0.0.1");
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(server.stats.dropped > 10, JSON.stringify(server.stats));
  assert.ok(lines.length < 20, `${lines.length} log lines: ${lines.slice(0, 5).join("; ")}`);
  assert.ok(!lines.some((l) => l.startsWith("error")), lines.join("; "));
  // Still serving.
  const other = createSocket("udp4");
  await new Promise<void>((r) => other.bind(0, "127.0.0.1", () => r()));
  t.after(() => other.close());
  const data: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no transfer")), 3000);
    other.on("message", (m, rinfo) => {
      const p: TftpPacket = decodeTftp(m);
      if (p.op !== Op.DATA) return reject(new Error(`got op ${p.op}`));
      data.push(p.data);
      other.send(encodeTftp({ op: Op.ACK, block: p.block }), rinfo.port, rinfo.address);
      if (p.data.length < 512) {
        clearTimeout(timer);
        resolve();
      }
    });
    other.send(rrq([]), server.port, "127.0.0.1");
  });
  assert.deepEqual(Buffer.concat(data), Buffer.alloc(3000, 5));
});
