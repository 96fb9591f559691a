import assert from "node:assert/strict";
import { it } from "node:test";
import fc from "fast-check";
import { decodeTftp, encodeTftp, negotiate, Op, TftpDecodeError } from "./protocol.ts";
import type { TftpPacket } from "./protocol.ts";

it("round-trips every packet kind", () => {
  const packets: TftpPacket[] = [
    {
      op: Op.RRQ,
      filename: "pxelinux/undionly.kpxe",
      mode: "octet",
      options: new Map([
        ["blksize", "1468"],
        ["tsize", "0"],
      ]),
    },
    { op: Op.WRQ, filename: "x", mode: "netascii", options: new Map() },
    { op: Op.DATA, block: 65535, data: Buffer.from("hello") },
    { op: Op.ACK, block: 7 },
    { op: Op.ERROR, code: 1, message: "File not found" },
    { op: Op.OACK, options: new Map([["windowsize", "16"]]) },
  ];
  for (const p of packets) assert.deepEqual(decodeTftp(encodeTftp(p)), p);
  // A real tftp-hpa request, with option names in upper case.
  const raw = Buffer.from("\x00\x01f.bin\x00octet\x00BLKSIZE\x008192\x00", "latin1");
  assert.deepEqual(decodeTftp(raw), {
    op: 1,
    filename: "f.bin",
    mode: "octet",
    options: new Map([["blksize", "8192"]]),
  });
});

it("negotiates within limits and leaves out bad options (RFC 2347-2349, 7440)", () => {
  const limits = { maxBlksize: 8192, maxWindowsize: 16, defaultTimeoutMs: 1000, size: 12345 };
  const n = negotiate(
    new Map([
      ["blksize", "65464"],
      ["tsize", "0"],
      ["windowsize", "64"],
      ["timeout", "3"],
    ]),
    limits,
  );
  // The window is also capped at 64 KiB: 8 blocks of 8192.
  assert.deepEqual([n.blksize, n.windowsize, n.timeoutMs], [8192, 8, 3000]);
  assert.deepEqual(Object.fromEntries(n.accepted), {
    blksize: "8192",
    tsize: "12345",
    windowsize: "8",
    timeout: "3",
  });
  const small = negotiate(
    new Map([
      ["blksize", "1468"],
      ["windowsize", "64"],
    ]),
    limits,
  );
  assert.equal(small.windowsize, 16);
  const bad = negotiate(
    new Map([
      ["blksize", "4"],
      ["timeout", "0"],
      ["windowsize", "x"],
      ["multicast", ""],
    ]),
    limits,
  );
  assert.deepEqual([bad.blksize, bad.windowsize, bad.accepted.size], [512, 1, 0]);
});

it("never throws anything but TftpDecodeError on random input (fuzz)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (a) => {
      try {
        decodeTftp(Buffer.from(a));
      } catch (err) {
        if (!(err instanceof TftpDecodeError)) throw err;
      }
    }),
    { numRuns: 5000 },
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.string(), { maxLength: 6 }),
      (op, parts) => {
        const buf = Buffer.concat([Buffer.from([0, op]), Buffer.from(parts.join("\0"), "latin1")]);
        try {
          decodeTftp(buf);
        } catch (err) {
          if (!(err instanceof TftpDecodeError)) throw err;
        }
      },
    ),
    { numRuns: 3000 },
  );
});
