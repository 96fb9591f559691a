// `inetboot init` on a test LAN: beside dnsmasq it writes proxy mode, alone it writes full mode
// with a free range, and in both a QEMU machine boots the menu's default entry (Debian's netboot
// installer, from its package) from the written file as it is. Run again it changes nothing;
// a different answer needs --force. A LAN that floods offers cannot make the probe grow.
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { CLI, requireFile, requireTool, run, tempDir } from "./helpers.ts";
import type { RunResult } from "./helpers.ts";
import { createLan, lanDnsmasq, requireNetns, startServe } from "./netns.ts";
import type { TestLan } from "./netns.ts";
import { bootUntil, tapNic } from "./qemu.ts";

const DI = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64";
const MAC = "52:54:00:12:34:e1";

function init(lan: TestLan, args: string[], stateDir: string): Promise<RunResult> {
  return run(
    "ip",
    ["netns", "exec", lan.server, process.execPath, CLI, "init", "--interface", "br0", ...args],
    {
      env: { ...process.env, INETBOOT_STATE_DIR: stateDir },
    },
  );
}

function ready(t: TestContext): boolean {
  return (
    requireNetns(t) &&
    requireTool(t, "qemu-system-x86_64", "qemu-system-x86") &&
    requireTool(t, "dnsmasq", "dnsmasq-base") &&
    requireFile(t, `${DI}/linux`, "debian-installer-12-netboot-amd64")
  );
}

/** Serves the written file and boots QEMU until the installer's kernel prints on ttyS0. */
async function bootsInstaller(lan: TestLan, config: string, stateDir: string): Promise<string[]> {
  const tap = lan.addTap();
  const serve = await startServe(lan, config, { INETBOOT_STATE_DIR: stateDir });
  const out = await bootUntil(tapNic(tap, MAC), /Linux version \d\S*/, 400_000, {
    netns: lan.server,
  });
  assert.match(out, /Linux version \d/, "the installer's kernel runs");
  const entry = serve.logs.find((l) => l.event === "http-entry" || l.event === "http-plan");
  assert.ok(entry, "iPXE asked for its plan");
  const kernel = serve.logs.find(
    (l) => l.event === "http-kernel" && l.entry === "debian-installer",
  );
  assert.ok(
    kernel,
    `the menu's default entry was booted: ${serve.logs.map((l) => `${String(l.event)}:${String(l.entry)}`).join(", ")}`,
  );
  return serve.logs.map((l) => String(l.event));
}

describe("inetboot init", { timeout: 1_200_000 }, () => {
  it("beside dnsmasq: proxy mode, and the machine boots the menu's installer", async (t) => {
    if (!ready(t)) return;
    const dir = tempDir(t);
    const lan = createLan(t, "10.96.1");
    const dnsmasq = lanDnsmasq(lan, dir);
    await dnsmasq.ready;
    const config = join(dir, "serve.yaml");
    const state = join(dir, "state");
    const first = await init(lan, ["--config", config, "--console", "ttyS0"], state);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /Boot interface: br0 \(10\.96\.1\.1, netmask 255\.255\.255\.0\)/);
    assert.match(first.stdout, /10\.96\.1\.2 offered 10\.96\.1\.(5\d|60), /);
    assert.match(first.stdout, /Wrote .*serve\.yaml: proxy DHCP/);
    assert.match(first.stdout, /Next: .* serve --config .*serve\.yaml/);
    const text = readFileSync(config, "utf8");
    assert.match(text, /^dhcp: \{ mode: proxy \}$/m);
    assert.match(text, /^listen: \{ interface: br0, address: 10\.96\.1\.1 \}$/m);
    assert.match(
      text,
      /debian-installer: \{ title: "Install Debian 12", kernel: \/usr\/lib\/debian-installer\//,
    );

    // Idempotent: the same answers change nothing; other answers need --force.
    const again = await init(lan, ["--config", config, "--console", "ttyS0"], state);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /Unchanged .*serve\.yaml/);
    const other2 = await init(lan, ["--config", config, "--dhcp", "full"], state);
    assert.equal(other2.code, 1);
    assert.match(
      other2.stderr,
      /exists and holds another configuration: kept as it is.*--force replaces it/,
    );
    assert.equal(readFileSync(config, "utf8"), text, "the file was not touched");

    const stages = await bootsInstaller(lan, config, state);
    assert.ok(stages.includes("proxy-offer"), stages.join(","));
    assert.ok(!stages.includes("dhcp-offer"), "proxy mode never offers an address");
    assert.match(dnsmasq.log(), /DHCPACK\(eth0\) 10\.96\.1\.(5\d|60) /, "dnsmasq gave the address");
  });

  it("alone on the LAN: full mode with a free range, and the machine boots", async (t) => {
    if (!ready(t)) return;
    const dir = tempDir(t);
    const lan = createLan(t, "10.96.2");
    const config = join(dir, "serve.yaml");
    writeFileSync(config, "# an older file\n");
    const state = join(dir, "state");
    const r = await init(
      lan,
      ["--config", config, "--console", "ttyS0", "--probe-seconds", "2", "--force"],
      state,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /none answered/);
    assert.match(
      r.stdout,
      /Replaced .*serve\.yaml: full DHCP, addresses 10\.96\.2\.128–10\.96\.2\.254/,
    );
    assert.equal(readFileSync(`${config}.bak`, "utf8"), "# an older file\n");
    assert.match(
      readFileSync(config, "utf8"),
      /^dhcp: \{ mode: full, range: \[10\.96\.2\.128, 10\.96\.2\.254\] \}$/m,
    );
    const stages = await bootsInstaller(lan, config, state);
    assert.ok(stages.includes("dhcp-offer"), stages.join(","));
  });

  it("prints a systemd unit systemd-analyze accepts; --systemd without systemd says so and writes nothing", async (t) => {
    if (!requireTool(t, "systemd-analyze", "systemd")) return;
    const dir = tempDir(t);
    const unit = await run(process.execPath, [
      CLI,
      "init",
      "--print-unit",
      "--config",
      "/etc/inetboot/serve.yaml",
    ]);
    assert.equal(unit.code, 0, unit.stderr);
    assert.match(
      unit.stdout,
      /^ExecStart=\S+ \S+bin\/inetboot\.js serve --config \/etc\/inetboot\/serve\.yaml$/m,
    );
    assert.match(unit.stdout, /^AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW$/m);
    writeFileSync(join(dir, "inetboot.service"), unit.stdout);
    const verify = await run("systemd-analyze", ["verify", join(dir, "inetboot.service")]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), "", "no complaints");
    if (existsSync("/run/systemd/system")) return;
    const config = join(dir, "serve.yaml");
    const r = await run(process.execPath, [
      CLI,
      "init",
      "--systemd",
      "--dhcp",
      "full",
      "--config",
      config,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /systemd is not running on this machine: leave out --systemd/);
    assert.ok(!existsSync(config));
  });

  it("a LAN flooding offers: the probe keeps 16, ignores other transactions and garbage, and ends on time", async (t) => {
    if (!requireNetns(t)) return;
    const dir = tempDir(t);
    const lan = createLan(t, "10.96.3");
    const other = lan.addHost(`${lan.prefix}.2`);
    // Answers each DISCOVER with garbage, an OFFER for another xid, and 500 OFFERs "from" 500 servers.
    const flood = `
const dgram = require("node:dgram");
const s = dgram.createSocket({ type: "udp4", reuseAddr: true });
s.bind(67, () => s.setBroadcast(true));
s.on("message", (m) => {
  const send = (b) => s.send(b, 68, "10.96.3.255"); // the subnet's broadcast: no route to 255.255.255.255 here
  send(Buffer.from("not dhcp at all"));
  const offer = (xid, server) => {
    const b = Buffer.alloc(300);
    b[0] = 2; b[1] = 1; b[2] = 6; b.writeUInt32BE(xid, 4);
    b.writeUInt32BE(0x0a600332, 16); m.copy(b, 28, 28, 44);
    b.writeUInt32BE(0x63825363, 236);
    Buffer.from([53, 1, 2, 54, 4, 10, 200 + (server >> 16), (server >> 8) & 255, server & 255, 255]).copy(b, 240);
    send(b);
  };
  offer((m.readUInt32BE(4) + 1) >>> 0, 1 << 16); // another transaction, from 10.201.0.0
  for (let i = 0; i < 500; i++) offer(m.readUInt32BE(4), i);
});`;
    writeFileSync(join(dir, "flood.cjs"), flood);
    lan.spawn(other.ns, process.execPath, [join(dir, "flood.cjs")]);
    await new Promise((r) => setTimeout(r, 500));
    const started = Date.now();
    const r = await run("ip", [
      "netns",
      "exec",
      lan.server,
      process.execPath,
      CLI,
      "init",
      "--interface",
      "br0",
      "--probe-seconds",
      "2",
      "--dry-run",
      "--json",
      "--config",
      join(dir, "s.yaml"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - started < 15_000, "the probe ended on its deadline");
    assert.match(r.stdout, /^dhcp: \{ mode: proxy \}$/m);
    const offers = [...r.stdout.matchAll(/10\.200\.\d+\.\d+/g)].map((m) => m[0]);
    assert.equal(offers.length, 16, "offers kept: at most 16 of the 500");
    assert.doesNotMatch(r.stdout, /10\.201\./, "an offer for another transaction is not taken");
  });
});
