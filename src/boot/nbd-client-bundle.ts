// The server's own nbd-client, packed for an initrd that lacks one: the binary, the shared
// libraries it needs and their loader under /inetboot (run through that loader, so the initrd's
// own libraries stay as they are), and `nbd-attach`, a small script every initrd hook uses to
// attach HOST:PORT/EXPORT at a device. A folder of its own at the top: the kernel replaces an
// archive entry of another type, and usr/lib is a folder in one initrd and a symlink in another
// (dracut's usr/lib -> lib), so a "usr/lib" folder entry would break the initrd it follows.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { promisify } from "node:util";
import type { CpioEntry } from "./cpio.ts";

const run = promisify(execFile);

export const DEFAULT_NBD_CLIENT = "/usr/sbin/nbd-client";
/** Where the bundle lives inside the initrd (no leading slash: a cpio path). */
export const BUNDLE_DIR = "inetboot";
/** The attach script's path in the booted initrd. */
export const NBD_ATTACH = `/${BUNDLE_DIR}/nbd-attach`;

const ATTACH_SCRIPT = `#!/bin/sh
# inetboot: nbd-attach HOST:PORT/EXPORT DEVICE [nbd-client options]
# Attaches an NBD export with the nbd-client inetboot put beside this script. The export name
# is everything after the first "/" (it may hold more).
spec="$1"
dev="$2"
shift 2
host="\${spec%%:*}"
rest="\${spec#*:}"
port="\${rest%%/*}"
name="\${rest#*/}"
case "$spec" in
*:*/*) ;;
*) echo "inetboot: '$spec' is not HOST:PORT/EXPORT" >&2; exit 2 ;;
esac
dir=/${BUNDLE_DIR}
exec "$dir/ld-linux.so" --library-path "$dir" "$dir/nbd-client" "$host" "$port" "$dev" -N "$name" "$@"
`;

/** The shared libraries and the loader `binary` needs, from ldd. */
async function sharedLibraries(binary: string): Promise<{ libs: string[]; loader: string }> {
  const { stdout } = await run("ldd", [binary]);
  const libs: string[] = [];
  let loader = "";
  for (const line of stdout.split("\n")) {
    const resolved = /=>\s+(\/\S+)/.exec(line)?.[1];
    if (resolved) libs.push(resolved);
    else if (/^\s*(\/\S*ld-linux\S*)/.test(line)) loader = /^\s*(\S+)/.exec(line)![1];
  }
  if (!loader) throw new Error(`ldd ${binary} names no dynamic loader`);
  return { libs, loader };
}

/** The cpio entries of the bundle (its folder included). */
export async function nbdClientBundle(nbdClient = DEFAULT_NBD_CLIENT): Promise<CpioEntry[]> {
  if (!existsSync(nbdClient)) {
    throw new Error(
      `${nbdClient} is missing: inetboot puts the server's nbd-client into initrds that lack one; install it (apt-get install nbd-client)`,
    );
  }
  const { libs, loader } = await sharedLibraries(nbdClient);
  const entries: CpioEntry[] = [
    { type: "dir", path: BUNDLE_DIR },
    { type: "file", path: `${BUNDLE_DIR}/nbd-attach`, data: ATTACH_SCRIPT, mode: 0o755 },
    {
      type: "file",
      path: `${BUNDLE_DIR}/nbd-client`,
      data: await readFile(nbdClient),
      mode: 0o755,
    },
    { type: "file", path: `${BUNDLE_DIR}/ld-linux.so`, data: await readFile(loader), mode: 0o755 },
  ];
  for (const lib of libs) {
    const data = await readFile(lib);
    entries.push({ type: "file", path: `${BUNDLE_DIR}/${basename(lib)}`, data, mode: 0o644 });
  }
  return entries;
}

/** "HOST:PORT/EXPORT", as nbd-attach and the hooks take it. */
export function nbdSpec(host: string, port: number, exportName: string): string {
  return `${host}:${port}/${exportName}`;
}

/** The CPU the bundled nbd-client runs on: this server's ("x86_64", "arm64", …). */
export const BUNDLE_CPU =
  process.arch === "x64" ? "x86_64" : process.arch === "ia32" ? "i386" : process.arch;

/** x86 and arm: boot loaders report the CPU they were built for (BIOS iPXE says i386). */
const family = (cpu: string): string =>
  /^(?:i[3-6]86|x86_64)$/.test(cpu) ? "x86" : /^arm/.test(cpu) ? "arm" : cpu;

/**
 * Whether the bundle runs on a machine reporting `cpu` (unknown: assumed like the server). Only
 * the family is compared: iPXE's BIOS build reports i386 on 64-bit machines.
 */
export function bundleRunsOn(cpu: string | undefined): boolean {
  return cpu === undefined || family(cpu) === family(BUNDLE_CPU);
}
