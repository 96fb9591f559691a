// The DHCP and TFTP servers under a storm of random and mutated packets: nothing crashes, no
// promise is left rejected, bad packets are counted as dropped, and real requests still work.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import fc from "fast-check";
import { DhcpServer } from "../src/dhcp/server.ts";
import {
  decodePacket,
  encodePacket,
  MessageType,
  messageType,
  Opt,
  optString,
} from "../src/dhcp/packet.ts";
import { encodeTftp, Op } from "../src/tftp/protocol.ts";
import { TftpServer } from "../src/tftp/server.ts";
import { VirtualTree } from "../src/tftp/tree.ts";
import { dhcpFixture as fixture } from "./dhcp-fixtures.ts";
import { run, tempDir } from "./helpers.ts";
import { freePort } from "./nginx.ts";

async function blast(socket: Socket, port: number, packets: Buffer[]): Promise<void> {
  for (let i = 0; i < packets.length; i++) {
    socket.send(packets[i], port, "127.0.0.1");
    if (i % 200 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 300));
}

function reply(socket: Socket, timeoutMs = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no reply")), timeoutMs);
    socket.once("message", (msg) => {
      clearTimeout(timer);
      resolve(msg);
    });
  });
}

it(
  "DHCP and TFTP servers survive thousands of random and mutated packets",
  { timeout: 120_000 },
  async (t) => {
    const problems: unknown[] = [];
    const onProblem = (err: unknown): void => {
      problems.push(err);
    };
    process.on("unhandledRejection", onProblem);
    process.on("uncaughtException", onProblem);
    t.after(() => {
      process.off("unhandledRejection", onProblem);
      process.off("uncaughtException", onProblem);
    });

    const dhcpPort = await freePort();
    const pxePort = await freePort();
    const dhcp = new DhcpServer({
      mode: "proxy",
      serverAddress: "127.0.0.1",
      bindAddress: "127.0.0.1",
      port: dhcpPort,
      proxyPort: pxePort,
      clientPort: await freePort(),
      boot: () => ({ file: "undionly.kpxe" }),
    });
    await dhcp.start();
    t.after(() => dhcp.stop());
    const dir = tempDir(t);
    writeFileSync(join(dir, "file.bin"), Buffer.alloc(100_000, 3));
    const tftp = new TftpServer({
      tree: new VirtualTree(dir),
      port: 0,
      address: "127.0.0.1",
      timeoutMs: 200,
      retries: 2,
    });
    await tftp.start();
    t.after(() => tftp.stop());

    const sender = createSocket("udp4");
    await new Promise<void>((r) => sender.bind(0, "127.0.0.1", () => r()));
    t.after(() => sender.close());

    const seeds = [
      "ipxe-bios-discover",
      "ovmf-pxe-discover",
      "dhclient-discover",
      "udhcpc-discover",
    ].map(fixture);
    const random = fc.sample(fc.uint8Array({ maxLength: 1400 }), 1500).map((a) => Buffer.from(a));
    const mutated = fc
      .sample(
        fc.tuple(
          fc.constantFrom(...seeds),
          fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 12 }),
        ),
        1500,
      )
      .map(([seed, flips]) => {
        const b = Buffer.from(seed);
        for (const [pos, v] of flips) b[pos % b.length] = v;
        return b;
      });
    await blast(sender, dhcpPort, [...random, ...mutated]);
    await blast(sender, pxePort, [...random.slice(0, 500), ...mutated.slice(0, 500)]);
    const tftpRandom = fc
      .sample(fc.tuple(fc.integer({ min: 0, max: 8 }), fc.uint8Array({ maxLength: 600 })), 2000)
      .map(([op, body]) => Buffer.concat([Buffer.from([0, op]), Buffer.from(body)]));
    // Requests for files that exist with random options, too: transfers start and time out.
    const requests = fc
      .sample(
        fc.dictionary(
          fc.constantFrom("blksize", "tsize", "windowsize", "timeout", "x"),
          fc.string({ maxLength: 6 }),
        ),
        200,
      )
      .map((o) =>
        encodeTftp({
          op: Op.RRQ,
          filename: "file.bin",
          mode: "octet",
          options: new Map(Object.entries(o)),
        }),
      );
    await blast(sender, tftp.port, [...tftpRandom, ...requests]);

    // Most of the storm is malformed and counted as dropped; on a loaded machine the kernel
    // itself drops some datagrams before the server reads them, so the bars are not exact.
    assert.ok(dhcp.stats.dropped > 500, `DHCP dropped ${dhcp.stats.dropped}`);
    assert.ok(tftp.stats.dropped > 250, `TFTP dropped ${tftp.stats.dropped}`);

    // Still serving: a PXE REQUEST on 4011 gets its ACK, a real TFTP client its file.
    // A socket of its own: the blasting one still receives late TFTP retransmissions.
    const client = createSocket("udp4");
    await new Promise<void>((r) => client.bind(0, "127.0.0.1", () => r()));
    t.after(() => client.close());
    const request = decodePacket(fixture("ovmf-pxe-discover"));
    request.options.set(Opt.MESSAGE_TYPE, Buffer.from([MessageType.REQUEST]));
    const answer = reply(client);
    client.send(encodePacket(request), pxePort, "127.0.0.1");
    const ack = decodePacket(await answer);
    assert.equal(messageType(ack), MessageType.ACK);
    assert.equal(optString(ack, Opt.BOOTFILE), "undionly.kpxe");
    const out = join(dir, "out.bin");
    const r = await run("curl", [
      "-sS",
      "--tftp-blksize",
      "1468",
      "-o",
      out,
      `tftp://127.0.0.1:${tftp.port}/file.bin`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(out), Buffer.alloc(100_000, 3));
    assert.deepEqual(problems, []);
  },
);
