// End to end: QEMU (TCG) network-boots from `inetboot serve` in a test LAN (network
// namespaces, a bridge, a tap): as the only DHCP server with QEMU's own iPXE ROM, in proxy mode
// beside dnsmasq on another host of the LAN, and with OVMF (UEFI) through ipxe.efi over TFTP.
import assert from "node:assert/strict";
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { hostKernel } from "./debian-rootfs.ts";
import { requireFile, requireTool, tempDir } from "./helpers.ts";
import { busyboxStatic, markerInitrd } from "./marker-initrd.ts";
import { createLan, lanDnsmasq, requireNetns, startServe } from "./netns.ts";
import type { TestLan } from "./netns.ts";
import { bootUntil, tapNic } from "./qemu.ts";

const MAC = "52:54:00:12:34:56";

function setup(t: TestContext): { dir: string; kernel: string; initrd: string } | null {
  if (!requireNetns(t) || !requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return null;
  if (!requireTool(t, "dnsmasq", "dnsmasq-base")) return null;
  const kit = hostKernel(t);
  const busybox = busyboxStatic(t);
  if (!kit || !busybox) return null;
  const dir = tempDir(t);
  const initrd = join(dir, "marker.cpio");
  writeFileSync(initrd, markerInitrd(busybox, "INETBOOT-NETBOOT-OK"));
  return { dir, kernel: kit.kernel, initrd };
}

function config(
  lan: TestLan,
  s: { dir: string; kernel: string; initrd: string },
  dhcp: string,
  tftp = true,
): string {
  const path = join(s.dir, "serve.yaml");
  writeFileSync(
    path,
    `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: ${dhcp}
tftp: { enabled: ${tftp} }
http: { port: 8080 }
state: ${join(s.dir, "state")}
entries:
  hello:
    kernel: ${s.kernel}
    initrd: [${s.initrd}]
    cmdline: console=ttyS0 panic=-1 inetboot.test=hello
  menu: { menu: [hello, local] }
machines:
  - match: { mac: "${MAC}" }
    boot: hello
default: menu
`,
  );
  return path;
}

function qemuNet(tap: string, romfile?: string): string[] {
  return tapNic(tap, MAC, { romfile });
}

const MARKER = /INETBOOT-NETBOOT-OK cmdline=[^\n]*\n/;

describe("QEMU network boot from inetboot serve", { timeout: 900_000 }, () => {
  it("BIOS, QEMU's iPXE ROM, inetboot as the only DHCP server", async (t) => {
    const s = setup(t);
    if (!s) return;
    const lan = createLan(t);
    const tap = lan.addTap();
    const serve = await startServe(
      lan,
      config(lan, s, `{ mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }`),
    );
    const out = await bootUntil(qemuNet(tap), MARKER, 300_000, { netns: lan.server });
    assert.match(out, /inetboot\.test=hello/);
    const stages = serve.logs.map((l) => l.event);
    for (const stage of [
      "dhcp-offer",
      "dhcp-ack",
      "http-boot-script",
      "http-plan",
      "http-kernel",
      "http-initrd",
    ]) {
      assert.ok(stages.includes(stage), `no ${stage} event in ${stages.join(",")}`);
    }
    const plan = serve.logs.find((l) => l.event === "http-plan");
    assert.equal(plan?.entry, "hello");
    assert.equal(plan?.mac, MAC);
  });

  it("BIOS, proxy mode beside dnsmasq on another host of the LAN", async (t) => {
    const s = setup(t);
    if (!s) return;
    const lan = createLan(t);
    const tap = lan.addTap();
    const dnsmasq = lanDnsmasq(lan, s.dir);
    await dnsmasq.ready;
    const serve = await startServe(lan, config(lan, s, "{ mode: proxy }"));
    const out = await bootUntil(qemuNet(tap), MARKER, 300_000, { netns: lan.server });
    assert.match(out, /inetboot\.test=hello/);
    assert.match(dnsmasq.log(), /DHCPACK\(eth0\) 10\.99\.0\.(5\d|60) /, "dnsmasq gave the address");
    const stages = serve.logs.map((l) => l.event);
    assert.ok(stages.includes("proxy-offer"), stages.join(","));
    assert.ok(!stages.includes("dhcp-offer"), "proxy mode never offers an address");
    assert.ok(stages.includes("http-kernel"));
  });

  /** Boots OVMF (no iPXE option ROM: its own virtio-net driver and PXE/HTTP clients). */
  async function uefiBoot(t: TestContext, tftp: boolean): Promise<string[] | null> {
    const s = setup(t);
    const code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    const varsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd";
    if (!s || !requireFile(t, code, "ovmf") || !requireFile(t, "/usr/lib/ipxe/ipxe.efi", "ipxe")) {
      return null;
    }
    const vars = join(s.dir, "vars.fd");
    copyFileSync(varsTemplate, vars);
    const lan = createLan(t);
    const tap = lan.addTap();
    const serve = await startServe(
      lan,
      config(lan, s, `{ mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }`, tftp),
    );
    const out = await bootUntil(
      [
        "-machine",
        "q35",
        "-drive",
        `if=pflash,format=raw,unit=0,readonly=on,file=${code}`,
        "-drive",
        `if=pflash,format=raw,unit=1,file=${vars}`,
        ...qemuNet(tap, ""),
      ],
      MARKER,
      600_000,
      { netns: lan.server, memoryMb: 1024 },
    );
    assert.match(out, /inetboot\.test=hello/);
    const plan = serve.logs.find((l) => l.event === "http-plan");
    assert.equal(plan?.entry, "hello");
    return serve.logs.map((l) => `${String(l.event)}:${typeof l.file === "string" ? l.file : ""}`);
  }

  it("UEFI (OVMF): PXE fetches ipxe.efi over TFTP, iPXE then boots over HTTP", async (t) => {
    const stages = await uefiBoot(t, true);
    if (!stages) return;
    assert.ok(stages.includes("tftp-done:ipxe.efi"), `ipxe.efi over TFTP in ${stages.join(", ")}`);
  });

  it("UEFI HTTP Boot (OVMF): no TFTP; the firmware gets ipxe.efi by an http:// URL", async (t) => {
    const stages = await uefiBoot(t, false);
    if (!stages) return;
    assert.ok(
      stages.includes("http-first-stage:ipxe.efi"),
      `ipxe.efi over HTTP in ${stages.join(", ")}`,
    );
    assert.ok(!stages.some((s) => s.startsWith("tftp-")), "no TFTP at all");
  });
});
