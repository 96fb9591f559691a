// Proxy-mode DHCP is not a reflector: a relayed request (giaddr) is answered only when the relay
// is on a subnet the server serves (its own, or relaySubnets); any other is dropped and logged
// at most once per interval.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";
import { it } from "node:test";
import type { TestContext } from "node:test";
import { decodePacket, encodePacket, MessageType, messageType } from "../src/dhcp/packet.ts";
import { DhcpServer } from "../src/dhcp/server.ts";
import type { DhcpServerOptions } from "../src/dhcp/server.ts";
import { dhcpFixture as fixture } from "./dhcp-fixtures.ts";
import { freePort } from "./nginx.ts";

async function proxyServer(
  t: TestContext,
  extra: Partial<DhcpServerOptions> = {},
): Promise<{ server: DhcpServer; port: number; warnings: unknown[] }> {
  const port = await freePort();
  const warnings: unknown[] = [];
  const logger = {
    warn: (o: unknown) => warnings.push(o),
    info: () => undefined,
    debug: () => undefined,
    error: () => undefined,
  } as unknown as DhcpServerOptions["logger"];
  const server = new DhcpServer({
    mode: "proxy",
    serverAddress: "127.0.0.1",
    netmask: "255.255.255.0",
    bindAddress: "127.0.0.1",
    port,
    proxyPort: await freePort(),
    boot: () => ({ file: "undionly.kpxe" }),
    logger,
    ...extra,
  });
  await server.start();
  t.after(() => server.stop());
  return { server, port, warnings };
}

/** A relay at `address` (port `port`, as a real relay uses 67): the reply it gets, or null. */
async function relayed(
  t: TestContext,
  address: string,
  port: number,
  giaddr: string,
): Promise<ReturnType<typeof decodePacket> | null> {
  const relay: Socket = createSocket("udp4");
  await new Promise<void>((r) => relay.bind(port, address, () => r()));
  t.after(() => relay.close());
  const discover = decodePacket(fixture("ovmf-pxe-discover"));
  discover.giaddr = giaddr;
  discover.hops = 1;
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), 1000);
    relay.once("message", (msg) => {
      clearTimeout(timer);
      resolve(decodePacket(msg));
    });
    relay.send(encodePacket(discover), port, "127.0.0.1");
  });
}

it("proxy mode answers a relay on its own subnet", async (t) => {
  const { port } = await proxyServer(t);
  const offer = await relayed(t, "127.0.0.2", port, "127.0.0.2");
  assert.ok(offer, "no reply at the relay");
  assert.equal(messageType(offer), MessageType.OFFER);
  assert.equal(offer.file, "undionly.kpxe");
});

it("proxy mode drops a relayed request whose giaddr is on no subnet of ours", async (t) => {
  const { server, port, warnings } = await proxyServer(t);
  // 127.0.1.2 is outside 127.0.0.1/24, yet reachable on loopback: a reply would arrive.
  const reply = await relayed(t, "127.0.1.2", port, "127.0.1.2");
  assert.equal(reply, null, "a reply was reflected to the spoofed giaddr");
  assert.equal(server.stats.replies, 0);
  assert.equal(server.stats.dropped, 1);
  // A flood of them: dropped, one log line.
  const sender = createSocket("udp4");
  await new Promise<void>((r) => sender.bind(0, "127.0.0.1", () => r()));
  t.after(() => sender.close());
  const discover = decodePacket(fixture("ovmf-pxe-discover"));
  discover.giaddr = "192.0.2.7";
  for (let i = 0; i < 200; i++) {
    sender.send(encodePacket(discover), port, "127.0.0.1");
    if (i % 20 === 19) await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 300));
  // (Loopback may lose a few of a burst: count what arrived.)
  assert.ok(server.stats.received > 100, `received ${server.stats.received}`);
  assert.equal(server.stats.dropped, server.stats.received);
  assert.equal(server.stats.replies, 0);
  assert.equal(warnings.length, 1, JSON.stringify(warnings));
});

it("proxy mode answers relays on configured relaySubnets", async (t) => {
  const { port } = await proxyServer(t, { relaySubnets: ["127.0.1.0/24"] });
  const offer = await relayed(t, "127.0.1.2", port, "127.0.1.2");
  assert.ok(offer, "no reply at the relay");
  assert.equal(messageType(offer), MessageType.OFFER);
  assert.throws(
    () =>
      new DhcpServer({
        mode: "proxy",
        serverAddress: "127.0.0.1",
        boot: () => null,
        relaySubnets: ["10.0.0.0"],
      }),
    /expected an IPv4 CIDR/,
  );
});
