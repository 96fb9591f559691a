// A Debian root filesystem for boot tests (debootstrap --variant=minbase with systemd-sysv and
// udev: boots to a login prompt on the serial console), built once per machine and kept in
// /var/tmp, plus the host's Debian kernel and initrd.
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { aptInstall, inetbootOk, requireOrSkip, requireTool, runOk } from "./helpers.ts";
import type { Skipper } from "./helpers.ts";

const ROOTFS = "/var/tmp/inetboot-test-rootfs-bookworm-systemd";
/** The guest's host name: its login prompt reads "inetboot-guest login:". */
export const GUEST_HOSTNAME = "inetboot-guest";
/** Chunk sizes for root-disk images (see packTree). */
export const ROOT_CHUNK_SIZE = "8K:32K:128K";
const MIRROR = process.env.DEBIAN_MIRROR ?? "http://deb.debian.org/debian";

export interface BootKit {
  kernel: string;
  initrd: string;
}

/** The host's newest Debian kernel and its initrd in /boot, or null. */
export function hostKernelPaths(): BootKit | null {
  const kernels = existsSync("/boot")
    ? readdirSync("/boot")
        .filter((f) => f.startsWith("vmlinuz-"))
        .sort()
    : [];
  const k = kernels.at(-1);
  if (!k) return null;
  const initrd = `/boot/initrd.img-${k.slice("vmlinuz-".length)}`;
  return existsSync(initrd) ? { kernel: `/boot/${k}`, initrd } : null;
}

/** The host's newest Debian kernel and initrd (installs linux-image-amd64 when root). */
export function hostKernel(t: Skipper): BootKit | null {
  if (!hostKernelPaths()) aptInstall("linux-image-amd64");
  const kit = hostKernelPaths();
  if (kit) return kit;
  requireOrSkip(t, "no Debian kernel and initrd in /boot (package linux-image-amd64; needs root)");
  return null;
}

/** The Debian tree, built once per machine by debootstrap (needs root and debootstrap). */
export function debianRootfs(): string {
  if (!existsSync(join(ROOTFS, "etc/os-release"))) {
    rmSync(ROOTFS, { recursive: true, force: true });
    execFileSync(
      "debootstrap",
      ["--variant=minbase", "--include=systemd-sysv,udev", "bookworm", ROOTFS, MIRROR],
      { stdio: "ignore" },
    );
    writeFileSync(join(ROOTFS, "etc/hostname"), `${GUEST_HOSTNAME}\n`);
  }
  return ROOTFS;
}

/**
 * Builds (once) a minbase Debian tree with systemd as init and returns a copy in `dir` with
 * `/inetboot-marker`, an init that prints a marker line and powers the machine off.
 */
export function debianTree(t: Skipper, dir: string): string | null {
  if (!requireTool(t, "debootstrap", "debootstrap")) return null;
  if (!existsSync(join(ROOTFS, "etc/os-release")) && process.getuid?.() !== 0) {
    requireOrSkip(t, `debootstrap needs root (to build ${ROOTFS} once)`);
    return null;
  }
  debianRootfs();
  const tree = join(dir, "rootfs");
  execFileSync("cp", ["-a", ROOTFS, tree]);
  const marker = join(tree, "inetboot-marker");
  writeFileSync(
    marker,
    [
      "#!/bin/sh",
      "mount -t proc proc /proc",
      'echo "INETBOOT-ROOT-OK $(. /etc/os-release; echo $PRETTY_NAME) $(grep " / " /proc/mounts)"',
      "echo o > /proc/sysrq-trigger",
      "while :; do :; done",
      "",
    ].join("\n"),
  );
  chmodSync(marker, 0o755);
  return tree;
}

/** The marker of `/inetboot-persist` (see addPersistInit): "INETBOOT-IMAGE-BOOT count=N MOUNT", to
 * the end of its line (a match on a partial line would stop the boot before the mount is seen). */
export const PERSIST_MARKER = /INETBOOT-IMAGE-BOOT count=(\d+) [^\n]*\n/;

/**
 * Adds `/inetboot-persist` to `tree`: an init that counts its boots in /boot-count on the root
 * disk (written and synced), prints PERSIST_MARKER with the count and the root mount, and powers
 * the machine off. Boot with `init=/inetboot-persist`.
 */
export function addPersistInit(tree: string): void {
  const init = join(tree, "inetboot-persist");
  writeFileSync(
    init,
    [
      "#!/bin/sh",
      "mount -t proc proc /proc",
      "mount -o remount,rw /",
      "n=$(cat /boot-count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /boot-count; sync",
      'echo "INETBOOT-IMAGE-BOOT count=$n $(grep " / " /proc/mounts)"',
      "echo o > /proc/sysrq-trigger",
      "while :; do :; done",
      "",
    ].join("\n"),
  );
  chmodSync(init, 0o755);
}

/**
 * Makes a 1 GiB ext4 image of `tree` and packs it, signed, as NAME into DIR/store. Chunks of
 * 32 KiB on average (8K:32K:128K) suit root disks with boot packs: the boot set's chunks then
 * hold ~82% data the boot reads, against ~69% with the 64 KiB default.
 */
export async function packTree(
  tree: string,
  dir: string,
  name: string,
): Promise<{ image: string; store: string; key: string }> {
  const image = join(dir, "root.img");
  await runOk("mkfs.ext4", ["-q", "-F", "-d", tree, "-E", "root_owner=0:0", image, "1G"]);
  const key = join(dir, "k");
  await inetbootOk(["keygen", "--out", key]);
  const store = join(dir, "store");
  await inetbootOk([
    "pack",
    image,
    "--store",
    store,
    "--name",
    name,
    "--key",
    key,
    "--chunk-size",
    ROOT_CHUNK_SIZE,
  ]);
  return { image, store, key };
}
