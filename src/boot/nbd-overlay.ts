// An initramfs overlay that teaches an initramfs-tools initrd (Debian, Ubuntu and their
// derivatives) without nbd-client to mount its root file system from an NBD export. The kernel
// unpacks it after the initrd it follows; the boot then runs with `boot=inetboot-nbd`:
//   /scripts/inetboot-nbd   a boot script (like /scripts/local or /scripts/nfs): networking,
//                           nbd-client, then the usual local root mount of /dev/nbd0
//   /usr/lib/inetboot/      the server's own nbd-client with the shared libraries it needs,
//                           run through their own loader so the initrd's libraries stay as
//                           they are
// The nbd module comes from the initrd itself (Debian's MODULES=most includes drivers/block).
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { promisify } from "node:util";
import { writeCpio } from "./cpio.ts";
import type { CpioEntry } from "./cpio.ts";

const run = promisify(execFile);

export const NBD_OVERLAY_BOOT = "inetboot-nbd";
export const DEFAULT_NBD_CLIENT = "/usr/sbin/nbd-client";
const LIB_DIR = "usr/lib/inetboot";

const BOOT_SCRIPT = `# inetboot: mount the root file system from an NBD export.  -*- shell-script -*-
# Added by inetboot serve to initrds without NBD support; kernel parameter
# inetboot.nbd=HOST:PORT/EXPORT (with boot=${NBD_OVERLAY_BOOT} and ip=...).

mount_top() { :; }
mount_premount() { :; }
mount_bottom() { :; }

mountroot()
{
	spec=
	for x in $(cat /proc/cmdline); do
		case "$x" in
		inetboot.nbd=*) spec="\${x#inetboot.nbd=}" ;;
		esac
	done
	[ -n "$spec" ] || panic "inetboot: no inetboot.nbd=HOST:PORT/EXPORT on the kernel command line"
	nbdhost="\${spec%%:*}"
	rest="\${spec#*:}"
	nbdport="\${rest%%/*}"
	nbdname="\${rest#*/}"
	modprobe nbd || panic "inetboot: this kernel's initrd has no nbd module"
	wait_for_udev 10
	configure_networking
	log_begin_msg "inetboot: attaching $nbdname from $nbdhost:$nbdport as /dev/nbd0"
	dir=/${LIB_DIR}
	"$dir/ld-linux.so" --library-path "$dir" "$dir/nbd-client" "$nbdhost" "$nbdport" /dev/nbd0 \\
		-N "$nbdname" -persist -systemd-mark ||
		panic "inetboot: nbd-client could not attach $nbdname from $nbdhost:$nbdport"
	log_end_msg
	ROOT=/dev/nbd0
	local_mount_root
}
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

/** Builds the overlay around the server's nbd-client (Debian package nbd-client). */
export async function buildNbdOverlay(nbdClient = DEFAULT_NBD_CLIENT): Promise<Buffer> {
  if (!existsSync(nbdClient)) {
    throw new Error(
      `${nbdClient} is missing: nbd-overlay puts the server's nbd-client into the initrd; install it (apt-get install nbd-client)`,
    );
  }
  const { libs, loader } = await sharedLibraries(nbdClient);
  const entries: CpioEntry[] = [
    { type: "dir", path: "scripts" },
    { type: "dir", path: "usr" },
    { type: "dir", path: "usr/lib" },
    { type: "dir", path: LIB_DIR },
    { type: "file", path: `scripts/${NBD_OVERLAY_BOOT}`, data: BOOT_SCRIPT, mode: 0o644 },
    { type: "file", path: `${LIB_DIR}/nbd-client`, data: await readFile(nbdClient), mode: 0o755 },
    { type: "file", path: `${LIB_DIR}/ld-linux.so`, data: await readFile(loader), mode: 0o755 },
  ];
  for (const lib of libs) {
    entries.push({
      type: "file",
      path: `${LIB_DIR}/${basename(lib)}`,
      data: await readFile(lib),
      mode: 0o644,
    });
  }
  return writeCpio(entries);
}

/** The kernel parameters for an initrd with nbd-client's own support (Debian's nbdroot=). */
export function nbdRootCmdline(host: string, port: number, exportName: string): string {
  return `root=/dev/nbd0 nbdroot=${host}:${port}/${exportName} ip=dhcp`;
}

/** The kernel parameters that make the overlay mount `exportName` at HOST:PORT as the root. */
export function nbdOverlayCmdline(host: string, port: number, exportName: string): string {
  return `boot=${NBD_OVERLAY_BOOT} inetboot.nbd=${host}:${port}/${exportName} root=/dev/nbd0 ip=dhcp`;
}
