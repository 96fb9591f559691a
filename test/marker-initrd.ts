// A tiny initramfs built with inetboot's cpio writer around busybox-static: /init prints a
// marker with the kernel command line on the serial console and powers off.
import { existsSync, readFileSync } from "node:fs";
import { basename } from "node:path";
import { writeCpio } from "../src/boot/cpio.ts";
import type { CpioEntry } from "../src/boot/cpio.ts";
import { aptInstall, requireFile, requireOrSkip } from "./helpers.ts";
import type { Skipper } from "./helpers.ts";

/** Whether an ELF64 executable names a dynamic loader (a PT_INTERP program header). */
function hasInterpreter(elf: Buffer): boolean {
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const size = elf.readUInt16LE(0x36);
  const count = elf.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) if (elf.readUInt32LE(phoff + i * size) === 3) return true;
  return false;
}

export function busyboxStatic(t: Skipper): Buffer | null {
  // busybox-static installs /bin/busybox statically linked (Debian's busybox is dynamic and
  // cannot run in an initramfs without its libraries; the two packages replace each other).
  const isStatic = (): boolean =>
    existsSync("/bin/busybox") && !hasInterpreter(readFileSync("/bin/busybox"));
  if (!isStatic()) aptInstall("busybox-static");
  if (!requireFile(t, "/bin/busybox", "busybox-static")) return null;
  if (!isStatic()) {
    requireOrSkip(t, "/bin/busybox is not statically linked (install busybox-static)");
    return null;
  }
  return readFileSync("/bin/busybox");
}

/**
 * An initramfs whose /init prints `MARKER cmdline=<cmdline>` then runs `extra` and powers off;
 * `files` are added to it.
 */
export function markerInitrd(
  busybox: Buffer,
  marker: string,
  extra = "",
  files: CpioEntry[] = [],
): Buffer {
  const init = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "${marker} cmdline=$(cat /proc/cmdline)"
${extra}
poweroff -f
`;
  return writeCpio([
    { type: "dir", path: "proc" },
    { type: "dir", path: "sys" },
    { type: "dir", path: "dev" },
    { type: "chardev", path: "dev/console", major: 5, minor: 1 },
    { type: "file", path: "bin/busybox", data: busybox, mode: 0o755 },
    { type: "file", path: "init", data: init, mode: 0o755 },
    ...files,
  ]);
}

/** udhcpc's hook: configure the address and default route it was given. */
export const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route add default via "\${router%% *}"
    ;;
esac
exit 0
`;

/**
 * `names` (e.g. "e1000") and the modules they depend on, dependencies first (modules.dep), as
 * paths under `root` (the host's /lib/modules/VERSION, or another architecture's unpacked).
 */
export function modulesWithDeps(root: string, names: string[]): string[] {
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(`${root}/modules.dep`, "utf8").split("\n")) {
    const [mod, rest] = line.split(":");
    if (mod) deps.set(mod, rest.trim() ? rest.trim().split(/\s+/) : []);
  }
  const order: string[] = [];
  const visit = (mod: string): void => {
    if (order.includes(mod)) return;
    for (const d of deps.get(mod) ?? []) visit(d);
    order.push(mod);
  };
  for (const name of names) {
    const mod = [...deps.keys()].find((m) => basename(m) === `${name}.ko`);
    if (mod) visit(mod); // else built in
  }
  return order.map((m) => `${root}/${m}`);
}

/**
 * Like markerInitrd, with the network up before `extra` runs: the e1000, virtio-net (and
 * virtio-blk) drivers
 * of `kernel` (modules in Debian's kernel) and a DHCP lease on eth0.
 */
export function networkMarkerInitrd(
  busybox: Buffer,
  kernel: string,
  marker: string,
  extra: string,
): Buffer {
  const version = basename(kernel).replace(/^vmlinuz-/, "");
  const modules = modulesWithDeps(`/lib/modules/${version}`, [
    "e1000",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
  ]);
  const up = `for m in ${modules.map((_, i) => `/modules/${i}.ko`).join(" ")}; do insmod $m 2>/dev/null; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -q -n -t 10 -s /udhcpc.sh || echo "${marker}-NO-DHCP"
`;
  return markerInitrd(busybox, marker, up + extra, [
    { type: "dir", path: "tmp" },
    { type: "dir", path: "modules" },
    ...modules.map((m, i): CpioEntry => ({
      type: "file",
      path: `modules/${i}.ko`,
      data: readFileSync(m),
    })),
    { type: "file", path: "udhcpc.sh", data: UDHCPC_SCRIPT, mode: 0o755 },
  ]);
}
