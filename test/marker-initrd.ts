// A tiny initramfs built with inetboot's cpio writer around busybox-static: /init prints a
// marker with the kernel command line on the serial console and powers off.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import type { TestContext } from "node:test";
import { writeCpio } from "../src/boot/cpio.ts";
import { requireFile } from "./helpers.ts";

/** Whether an ELF64 executable names a dynamic loader (a PT_INTERP program header). */
function hasInterpreter(elf: Buffer): boolean {
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const size = elf.readUInt16LE(0x36);
  const count = elf.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) if (elf.readUInt32LE(phoff + i * size) === 3) return true;
  return false;
}

export function busyboxStatic(t: TestContext): Buffer | null {
  // busybox-static installs /bin/busybox statically linked (Debian's busybox is dynamic and
  // cannot run in an initramfs without its libraries; the two packages replace each other).
  const isStatic = (): boolean =>
    existsSync("/bin/busybox") && !hasInterpreter(readFileSync("/bin/busybox"));
  if (!isStatic() && process.getuid?.() === 0) {
    try {
      execFileSync(
        "sh",
        [
          "-c",
          "apt-get install -y -qq busybox-static || (apt-get update -qq && apt-get install -y -qq busybox-static)",
        ],
        {
          stdio: "ignore",
          env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
        },
      );
    } catch {
      // reported below
    }
  }
  if (!requireFile(t, "/bin/busybox", "busybox-static")) return null;
  if (!isStatic()) {
    const reason = "SKIPPED: /bin/busybox is not statically linked (install busybox-static)";
    if (process.env.CI === "true") throw new Error(reason);
    t.skip(reason);
    return null;
  }
  return readFileSync("/bin/busybox");
}

/** An initramfs whose /init prints `MARKER cmdline=<cmdline>` then runs `extra` and powers off. */
export function markerInitrd(busybox: Buffer, marker: string, extra = ""): Buffer {
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
  ]);
}
