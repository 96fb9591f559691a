import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fakeHost, parseConfig } from "../config.ts";
import { findDebianInstaller, freeRange, starterConfig } from "./starter.ts";

describe("inetboot init's starter configuration", () => {
  it("leases from the upper half of the subnet (at most 200), never our own address", () => {
    assert.deepEqual(freeRange("10.0.0.1", "255.255.255.0"), ["10.0.0.128", "10.0.0.254"]);
    assert.deepEqual(freeRange("10.0.0.200", "255.255.255.0"), ["10.0.0.128", "10.0.0.199"]);
    assert.deepEqual(freeRange("10.0.0.128", "255.255.255.0"), ["10.0.0.129", "10.0.0.254"]);
    assert.deepEqual(freeRange("10.0.0.254", "255.255.255.0"), ["10.0.0.128", "10.0.0.253"]);
    // Inside the range: the larger side of our address, never a sliver.
    assert.deepEqual(freeRange("10.0.0.129", "255.255.255.0"), ["10.0.0.130", "10.0.0.254"]);
    assert.deepEqual(freeRange("10.0.0.240", "255.255.255.0"), ["10.0.0.128", "10.0.0.239"]);
    assert.deepEqual(freeRange("192.168.1.25", "255.255.255.240"), [
      "192.168.1.26",
      "192.168.1.30",
    ]);
    assert.deepEqual(freeRange("172.16.5.9", "255.255.0.0"), ["172.16.255.55", "172.16.255.254"]);
    assert.deepEqual(freeRange("192.168.1.17", "255.255.255.240"), [
      "192.168.1.24",
      "192.168.1.30",
    ]);
    assert.equal(freeRange("192.168.1.1", "255.255.255.248"), undefined, "a /29 is too small");
  });

  it("finds the newest installed netboot installer", (t) => {
    const root = mkdtempSync(join(tmpdir(), "inetboot-di-"));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    assert.equal(findDebianInstaller(root), undefined);
    for (const release of ["12", "13", "14"]) {
      const dir = join(root, release, "amd64/text/debian-installer/amd64");
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "linux"), "");
      if (release !== "14") writeFileSync(join(dir, "initrd.gz"), ""); // 14: incomplete
    }
    assert.deepEqual(findDebianInstaller(root), {
      release: 13,
      kernel: join(root, "13/amd64/text/debian-installer/amd64/linux"),
      initrd: join(root, "13/amd64/text/debian-installer/amd64/initrd.gz"),
    });
  });

  it("writes what serve accepts without a warning: proxy or full, with the menu's entries", () => {
    const host = fakeHost({
      "/di/13/amd64/text/debian-installer/amd64/linux": "",
      "/di/13/amd64/text/debian-installer/amd64/initrd.gz": "",
      "/usr/lib/ipxe/undionly.kpxe": "",
      "/usr/lib/ipxe/ipxe.efi": "",
    });
    const full = starterConfig({
      interface: "eth1",
      address: "10.1.0.1",
      dhcp: { mode: "full", range: ["10.1.0.128", "10.1.0.254"] },
      probed: true,
      debianInstaller: {
        release: 13,
        kernel: "/di/13/amd64/text/debian-installer/amd64/linux",
        initrd: "/di/13/amd64/text/debian-installer/amd64/initrd.gz",
      },
      iso: "https://example.org/live.iso",
      chain: "https://boot.example.org/menu.ipxe",
      console: "ttyS0,115200",
      state: "/var/lib/inetboot",
      cache: "/var/cache/inetboot",
    });
    const c = parseConfig(full, "serve.yaml", host);
    assert.deepEqual(c.warnings, []);
    assert.equal(c.dhcp.mode, "full");
    assert.deepEqual(c.dhcp.range, ["10.1.0.128", "10.1.0.254"]);
    assert.equal(c.stateDir, "/var/lib/inetboot");
    assert.equal(c.default, "menu");
    const menu = c.entries.get("menu");
    assert.ok(menu?.kind === "menu");
    assert.deepEqual(
      [...c.entries.keys()].filter((k) => ["debian-installer", "live", "netboot"].includes(k)),
      ["debian-installer", "live", "netboot"],
    );
    const di = c.entries.get("debian-installer");
    assert.ok(di?.kind === "kernel");
    assert.match(full, /cmdline: "console=ttyS0,115200"/);
    assert.match(full, /title: "Install Debian 13"/);
    const live = c.entries.get("live");
    assert.ok(live?.kind === "iso");
    assert.equal(live.cmdline, "{recipe} console=ttyS0,115200", "added to the recipe's line");
    assert.match(full, /# No DHCP server answered on eth1/);

    const proxy = starterConfig({
      interface: "eth1",
      address: "10.1.0.1",
      dhcp: { mode: "proxy", servers: ["10.1.0.254"] },
      probed: true,
    });
    const p = parseConfig(proxy, "serve.yaml", host);
    assert.deepEqual(p.warnings, []);
    assert.equal(p.dhcp.mode, "proxy");
    assert.match(proxy, /# 10\.1\.0\.254 already gives addresses on eth1/);
    assert.match(
      proxy,
      /menu: \[local, shell\], timeout: 10, default: local/,
      "nothing else: the local disk",
    );
  });
});
