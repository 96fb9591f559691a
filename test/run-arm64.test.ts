// `inetboot run --arch arm64` on an x86_64 host (qemu-system-aarch64 -M virt, TCG): an arm64
// image streamed from a store boots Debian's arm64 kernel with the image as its virtio disk and
// runs the image's own busybox; a live ISO with an arm64 kernel boots through its recipe, the
// guest downloading what the recipe names from the ISO (the NBD overlay would carry this host's
// x86_64 nbd-client, so an arm64 guest is given the download recipe, and told so).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { arm64FetchInitrd, arm64Parts, arm64RootInitrd, arm64RootTree } from "./arm64-parts.ts";
import { packTree } from "./debian-rootfs.ts";
import { inetboot, requireFile, requireTool, tempDir } from "./helpers.ts";
import { makeIso } from "./iso-maker.ts";

describe("inetboot run --arch arm64", { timeout: 900_000 }, () => {
  it("boots an arm64 image from a store as the VM's virtio disk; the guest runs the image's own busybox", async (t) => {
    if (!requireTool(t, "qemu-system-aarch64", "qemu-system-arm")) return;
    if (!requireTool(t, "mkfs.ext4", "e2fsprogs")) return;
    const parts = arm64Parts(t);
    if (!parts) return;
    const dir = tempDir(t);
    const tree = arm64RootTree(parts, dir, "INETBOOT-ARM64-IMAGE");
    const { store, key } = await packTree(tree, dir, "arm64");
    const initrd = join(dir, "initrd.cpio");
    writeFileSync(initrd, arm64RootInitrd(parts, "INETBOOT-ARM64"));
    const r = await inetboot([
      ...["run", "arm64", "--arch", "arm64", "--store", store, "--trust", `${key}.pub`],
      ...["--cache", join(dir, "cache"), "--disk", join(dir, "vm.cow")],
      ...["--kernel", parts.kernel, "--initrd", initrd, "--cmdline", "console=ttyAMA0 panic=-1"],
      ...["--until", "INETBOOT-ARM64-IMAGE.*|-FAILED", "--timeout", "300"],
    ]);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stdout, /console +INETBOOT-ARM64-IMAGE arch=aarch64 root=\/dev\/vda ext4/);
  });

  it("boots a live ISO with an arm64 kernel through its recipe; the guest downloads the recipe's file from the ISO", async (t) => {
    if (!requireTool(t, "qemu-system-aarch64", "qemu-system-arm")) return;
    const parts = arm64Parts(t);
    if (!parts || !requireFile(t, parts.kernel, "linux-image-arm64")) return;
    const dir = tempDir(t);
    const squashfs = randomBytes(3 * 1024 * 1024 + 123);
    const iso = await makeIso(t, dir, {
      "live/vmlinuz": readFileSync(parts.kernel),
      "live/initrd.img": arm64FetchInitrd(parts, "INETBOOT-ARM64-LIVE"),
      "live/filesystem.squashfs": squashfs,
    });
    if (!iso) return;
    const r = await inetboot([
      ...["run", iso, "--arch", "arm64", "--cache", join(dir, "cache")],
      ...["--until", "INETBOOT-ARM64-LIVE.*", "--timeout", "300"],
    ]);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stderr, /the arm64 guest downloads the ISO/);
    const line = /console +(INETBOOT-ARM64-LIVE[^\n]*)/.exec(r.stdout)?.[1] ?? "";
    assert.match(line, /arch=aarch64 fetched=(\d+) /, r.stdout);
    assert.equal(Number(/fetched=(\d+)/.exec(line)?.[1]), squashfs.length, "the whole squashfs");
    assert.match(
      line,
      /boot=live fetch=http:\/\/10\.0\.2\.2:\d+\/iso\/tree\/live\/filesystem\.squashfs/,
    );
    assert.match(line, /console=ttyAMA0/, "arm64's serial console by default");
  });
});
