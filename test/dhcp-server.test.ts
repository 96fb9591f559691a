// The DHCP server through its sockets: relayed requests (giaddr) are answered through the relay,
// and only on the configured interface.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { it } from "node:test";
import { LeaseDb } from "../src/dhcp/leases.ts";
import {
  decodePacket,
  encodePacket,
  MessageType,
  messageType,
  Opt,
  optString,
  ipToBuffer,
} from "../src/dhcp/packet.ts";
import { DhcpServer } from "../src/dhcp/server.ts";
import { dhcpFixture as fixture } from "./dhcp-fixtures.ts";
import { tempDir } from "./helpers.ts";
import { createLan, requireNetns } from "./netns.ts";
import { freePort } from "./nginx.ts";

it("answers a relay agent (giaddr) on the server port, with an address from the pool", async (t) => {
  const port = await freePort();
  const leases = await LeaseDb.open(
    {
      rangeStart: "127.0.0.100",
      rangeEnd: "127.0.0.150",
      netmask: "255.255.255.0",
      reservations: [],
      leaseSeconds: 600,
    },
    null,
  );
  const server = new DhcpServer({
    mode: "full",
    serverAddress: "127.0.0.1",
    bindAddress: "127.0.0.1",
    port,
    proxyPort: await freePort(),
    leases,
    boot: () => ({ file: "undionly.kpxe" }),
  });
  await server.start();
  t.after(() => server.stop());
  // The relay: another loopback address, same port (as a real relay uses 67 on its host).
  const relay = createSocket("udp4");
  await new Promise<void>((r) => relay.bind(port, "127.0.0.2", () => r()));
  t.after(() => relay.close());
  const exchange = (p: ReturnType<typeof decodePacket>): Promise<ReturnType<typeof decodePacket>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no reply at the relay")), 3000);
      relay.once("message", (msg) => {
        clearTimeout(timer);
        resolve(decodePacket(msg));
      });
      relay.send(encodePacket(p), port, "127.0.0.1");
    });
  const discover = decodePacket(fixture("ovmf-pxe-discover"));
  discover.giaddr = "127.0.0.2";
  discover.hops = 1;
  const offer = await exchange(discover);
  assert.equal(messageType(offer), MessageType.OFFER);
  assert.equal(offer.yiaddr, "127.0.0.100");
  assert.equal(offer.giaddr, "127.0.0.2");
  assert.equal(offer.file, "undionly.kpxe");
  const request = decodePacket(fixture("ovmf-pxe-discover"));
  request.giaddr = "127.0.0.2";
  request.options.set(Opt.MESSAGE_TYPE, Buffer.from([MessageType.REQUEST]));
  request.options.set(Opt.REQUESTED_IP, ipToBuffer(offer.yiaddr));
  request.options.set(Opt.SERVER_ID, ipToBuffer("127.0.0.1"));
  const ack = await exchange(request);
  assert.equal(messageType(ack), MessageType.ACK);
  assert.equal(ack.yiaddr, "127.0.0.100");
  assert.equal(optString(ack, Opt.VENDOR_CLASS), "PXEClient");
});

it(
  "hears only its own interface: a client on another link gets nothing",
  { timeout: 60_000 },
  async (t) => {
    if (!requireNetns(t)) return;
    const lan = createLan(t);
    // A second link into the server namespace, not on the bridge.
    const other = lan.addHost("10.98.0.2");
    lan.exec(lan.server, "ip", ["link", "set", `vb1${lan.id}`, "nomaster"]);
    lan.exec(lan.server, "ip", ["addr", "add", "10.98.0.1/24", "dev", `vb1${lan.id}`]);
    const onBridge = lan.addHost();
    const dir = tempDir(t);
    const { writeFileSync } = await import("node:fs");
    const config = `${dir}/serve.yaml`;
    writeFileSync(
      config,
      `listen: { interface: br0, address: ${lan.serverAddress} }\ndhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.110] }\nstate: ${dir}/state\nhttp: { port: 8080 }\n`,
    );
    const { startServe } = await import("./netns.ts");
    const serve = await startServe(lan, config);
    const script = `${dir}/script`;
    writeFileSync(script, `#!/bin/sh\n[ "$1" = bound ] && echo "$ip" >> ${dir}/got\nexit 0\n`, {
      mode: 0o755,
    });
    const udhcpc = (ns: string): string =>
      lan.exec(ns, "sh", [
        "-c",
        `udhcpc -i eth0 -n -q -f -t 2 -T 1 -s ${script} 2>&1; echo exit=$?`,
      ]);
    assert.match(udhcpc(other.ns), /exit=1/, "no lease on the other link");
    assert.match(udhcpc(onBridge.ns), /exit=0/);
    assert.equal(readFileSync(`${dir}/got`, "utf8").trim(), `${lan.prefix}.100`);
    await serve.waitFor((l) => l.event === "dhcp-ack");
    assert.equal(serve.logs.filter((l) => l.event === "dhcp-offer").length, 1);
  },
);
