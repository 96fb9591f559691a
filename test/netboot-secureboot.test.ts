// End to end under real UEFI firmware in QEMU (TCG), network-booting from inetboot serve:
// x86_64 OVMF with Secure Boot enforced (Microsoft's keys enrolled) boots Microsoft-signed shim
// → Debian-signed network GRUB → the host's Debian-signed kernel, all over TFTP, GRUB's config
// rendered per machine (a menu, then the chosen entry); the same machine handed iPXE is refused
// by its firmware and the server's timeline says what to configure. arm64 (AAVMF, -M virt) boots
// the installer's shim and GRUB to an arm64 Debian kernel, with Secure Boot on and GRUB alone
// with it off.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { writeCpio } from "../src/boot/cpio.ts";
import { arm64RootInitrd, arm64Parts, arm64RootTree } from "./arm64-parts.ts";
import { hostKernel, packTree } from "./debian-rootfs.ts";
import { requireFile, requireTool, tempDir } from "./helpers.ts";
import { busyboxStatic, markerInitrd } from "./marker-initrd.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { ServeProcess, TestLan } from "./netns.ts";
import { bootUntil, tapNic, uefiMachine } from "./qemu.ts";

const MAC = "52:54:00:5b:00:01";
const SHIM_X64 = "/usr/lib/shim/shimx64.efi.signed";
const GRUB_X64 = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";
const INSTALLER_ARM64 = "/usr/lib/debian-installer/images/12/arm64/text/debian-installer/arm64";
/** The kernel's own report, in the marker's dmesg excerpt. */
const SECURE_BOOT_ON = /secureboot: Secure boot enabled/;

/** The marker's /init also prints the kernel's Secure Boot lines. */
const REPORT = "dmesg | grep -i 'secure boot' || echo 'no secure boot lines'";

function serveConfig(lan: TestLan, dir: string, entries: string, loaders: string): string {
  const path = join(dir, "serve.yaml");
  writeFileSync(
    path,
    `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
tftp: { enabled: true }
http: { port: 8080 }
state: ${join(dir, "state")}
loaders: ${loaders}
entries:
${entries}
`,
  );
  return path;
}

async function boot(
  t: TestContext,
  dir: string,
  arch: "x86_64" | "arm64",
  secureBoot: boolean,
  lan: TestLan,
  marker: RegExp,
): Promise<string | null> {
  const fw = uefiMachine(dir, arch, secureBoot);
  if (!requireTool(t, fw.binary, arch === "arm64" ? "qemu-system-arm" : "qemu-system-x86"))
    return null;
  for (const f of fw.files) {
    if (!requireFile(t, f, arch === "arm64" ? "qemu-efi-aarch64" : "ovmf")) return null;
  }
  const tap = lan.addTap();
  // romfile= : no iPXE option ROM, the firmware's own network stack (as on real machines).
  const nic = tapNic(tap, MAC, { romfile: "" });
  return bootUntil([...fw.args, ...nic], marker, 420_000, {
    netns: lan.server,
    memoryMb: 1024,
    binary: fw.binary,
  });
}

const events = (serve: ServeProcess): string[] =>
  serve.logs.map((l) => `${String(l.event)}:${typeof l.file === "string" ? l.file : ""}`);

describe("Secure Boot and arm64: shim → GRUB from inetboot serve", { timeout: 1_500_000 }, () => {
  it("x86_64 OVMF, Secure Boot enforced: shim → GRUB → the signed Debian kernel over TFTP, through GRUB's menu", async (t) => {
    if (!requireNetns(t) || !requireFile(t, SHIM_X64, "shim-signed")) return;
    if (!requireFile(t, GRUB_X64, "grub-efi-amd64-signed")) return;
    const kit = hostKernel(t);
    const busybox = busyboxStatic(t);
    if (!kit || !busybox) return;
    const dir = tempDir(t);
    const initrd = join(dir, "marker.cpio");
    writeFileSync(initrd, markerInitrd(busybox, "INETBOOT-SB-OK", REPORT));
    const lan = createLan(t);
    const config = serveConfig(
      lan,
      dir,
      `  hello:
    title: Hello under Secure Boot
    kernel: ${kit.kernel}
    initrd: [${initrd}]
    cmdline: console=ttyS0 panic=-1 inetboot.test=sb
  start: { menu: [hello, local], default: hello, timeout: 1 }
default: start`,
      "{ uefi-x86_64: shim }",
    );
    const serve = await startServe(lan, config);
    const out = await boot(t, dir, "x86_64", true, lan, /INETBOOT-SB-OK[^\n]*\n[^\n]*\n/);
    if (out === null) return;
    assert.match(out, /inetboot\.test=sb/);
    assert.match(out, SECURE_BOOT_ON, "the guest kernel reports Secure Boot enabled");
    const seen = events(serve);
    for (const e of [
      "tftp-done:shimx64.efi",
      "tftp-done:grubx64.efi",
      "grub-config:grub/grub.cfg",
      "grub-plan:",
      "grub-entry:",
      "tftp-kernel:" + kit.kernel,
      "tftp-initrd:" + initrd,
    ]) {
      assert.ok(seen.includes(e), `no ${e} in ${seen.join(", ")}`);
    }
    const plan = serve.logs.find((l) => l.event === "grub-plan");
    assert.equal(plan?.mac, MAC, "GRUB reported the machine's MAC");
    const kernelDone = serve.logs.find(
      (l) => l.event === "tftp-done" && String(l.file).startsWith("/files/hello/kernel"),
    );
    assert.ok(kernelDone, "the kernel went over TFTP to the end");
    const kernelStart = serve.logs.find(
      (l) => l.event === "tftp-start" && String(l.file).startsWith("/files/hello/kernel"),
    );
    t.diagnostic(
      `GRUB fetched the ${Number(kernelDone.bytes)} B kernel over TFTP in ${Number(kernelDone.time) - Number(kernelStart?.time)} ms (${String(kernelStart?.detail)})`,
    );
    assert.equal(plan?.entry, "start");
    const machines = JSON.parse(
      lan.exec(lan.server, "curl", ["-sf", "http://127.0.0.1:8080/api/machines"]),
    ) as { mac: string; loader?: string; entry?: string }[];
    const m = machines.find((x) => x.mac === MAC);
    assert.equal(m?.loader, "shim → GRUB");
    assert.equal(m?.entry, "hello");
  });

  it("x86_64 OVMF, Secure Boot enforced: iPXE is refused by the firmware, and the timeline says to use shim", async (t) => {
    if (!requireNetns(t) || !requireFile(t, "/usr/lib/ipxe/ipxe.efi", "ipxe")) return;
    const kit = hostKernel(t);
    if (!kit) return;
    const dir = tempDir(t);
    const lan = createLan(t);
    const config = serveConfig(
      lan,
      dir,
      `  hello: { kernel: ${kit.kernel}, cmdline: console=ttyS0 }
default: hello`,
      "{ uefi-x86_64: ipxe }",
    );
    const serve = await startServe(lan, config);
    const out = await boot(t, dir, "x86_64", true, lan, /Access Denied/);
    if (out === null) return;
    const refused = await serve.waitFor((l) => l.event === "first-stage-refused", 120_000);
    assert.equal(refused.mac, MAC);
    assert.equal(refused.file, "ipxe.efi");
    assert.match(String(refused.detail), /Secure Boot refuses unsigned iPXE.*loader: shim/);
    assert.ok(!events(serve).some((e) => e.startsWith("http-plan")), "iPXE never ran");
  });

  it("arm64 AAVMF, Secure Boot on: an image entry boots through shim → GRUB with its root over NBD, running the image's own arm64 binaries", async (t) => {
    if (!requireNetns(t) || !requireTool(t, "mkfs.ext4", "e2fsprogs")) return;
    const parts = arm64Parts(t);
    if (!parts) return;
    const dir = tempDir(t);
    const tree = arm64RootTree(parts, dir, "INETBOOT-ARM64-IMAGE");
    const { store, key } = await packTree(tree, dir, "arm64");
    const initrd = join(dir, "nbd-initrd.cpio");
    writeFileSync(initrd, arm64RootInitrd(parts, "INETBOOT-ARM64"));
    const lan = createLan(t);
    const config = serveConfig(
      lan,
      dir,
      `  a64:
    image: { name: arm64, store: ${store}, trust: [${key}.pub] }
    kernel: ${parts.kernel}
    initrd: [${initrd}]
    cmdline: console=ttyAMA0 panic=-1
default: a64`,
      "{ uefi-arm64: shim }",
    );
    const serve = await startServe(lan, config);
    const out = await boot(t, dir, "arm64", true, lan, /INETBOOT-ARM64-IMAGE[^\n]*\n|-FAILED/);
    if (out === null) return;
    assert.match(out, SECURE_BOOT_ON);
    assert.match(out, /INETBOOT-ARM64-IMAGE arch=aarch64 root=\/dev\/nbd0 ext4/, out.slice(-2500));
    const seen = events(serve);
    for (const e of ["tftp-done:shimaa64.efi", "grub-plan:", "nbd-export:"]) {
      assert.ok(seen.includes(e), `no ${e} in ${seen.join(", ")}`);
    }
  });

  for (const secureBoot of [true, false]) {
    const chain = secureBoot ? "shim → GRUB, Secure Boot on" : "GRUB alone, Secure Boot off";
    it(`arm64 AAVMF (-M virt), ${chain}: the installer's arm64 kernel and initrd run their own /init`, async (t) => {
      if (!requireNetns(t)) return;
      const kernel = join(INSTALLER_ARM64, "linux");
      if (!requireFile(t, kernel, "debian-installer-12-netboot-arm64")) return;
      const dir = tempDir(t);
      // The installer's initrd, with an /init of ours after it (run by its arm64 busybox).
      const init = `#!/bin/sh
mount -t proc proc /proc
echo "INETBOOT-ARM64-OK arch=$(uname -m) cmdline=$(cat /proc/cmdline)"
${REPORT}
poweroff -f
`;
      const overlay = join(dir, "marker.cpio");
      writeFileSync(overlay, writeCpio([{ type: "file", path: "init", data: init, mode: 0o755 }]));
      const lan = createLan(t);
      const config = serveConfig(
        lan,
        dir,
        `  hello:
    kernel: ${kernel}
    initrd: [${join(INSTALLER_ARM64, "initrd.gz")}, ${overlay}]
    cmdline: console=ttyAMA0 panic=-1 inetboot.test=arm64
default: hello`,
        `{ uefi-arm64: ${secureBoot ? "shim" : "grub"} }`,
      );
      const serve = await startServe(lan, config);
      const out = await boot(t, dir, "arm64", secureBoot, lan, /INETBOOT-ARM64-OK[^\n]*\n[^\n]*\n/);
      if (out === null) return;
      assert.match(out, /INETBOOT-ARM64-OK arch=aarch64 cmdline=[^\n]*inetboot\.test=arm64/);
      if (secureBoot) assert.match(out, SECURE_BOOT_ON);
      else assert.doesNotMatch(out, SECURE_BOOT_ON);
      const seen = events(serve);
      const first = secureBoot ? "tftp-done:shimaa64.efi" : "tftp-done:grubaa64.efi";
      for (const e of [first, "tftp-done:grubaa64.efi", "grub-plan:", "tftp-kernel:" + kernel]) {
        assert.ok(seen.includes(e), `no ${e} in ${seen.join(", ")}`);
      }
      const dhcp = serve.logs.find((l) => l.event === "dhcp-offer" && l.arch !== undefined);
      assert.equal(dhcp?.arch, 11, "arm64 UEFI PXE (DHCP arch 11)");
      // The installer's GRUB looks for its config under its own prefix.
      assert.ok(seen.includes("grub-config:debian-installer/arm64/grub/grub.cfg"), seen.join());
    });
  }
});
