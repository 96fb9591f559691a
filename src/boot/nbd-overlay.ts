// An initramfs overlay that teaches an initramfs-tools initrd (Debian, Ubuntu and their
// derivatives) without nbd-client to mount its root file system from an NBD export. The kernel
// unpacks it after the initrd it follows; the boot then runs with `boot=inetboot-nbd`:
//   /scripts/inetboot-nbd   a boot script (like /scripts/local or /scripts/nfs): networking,
//                           nbd-client, then the usual local root mount of /dev/nbd0
//   /inetboot/              the server's own nbd-client with the shared libraries it needs,
//                           run through their own loader so the initrd's libraries stay as
//                           they are
// The nbd module comes from the initrd itself (Debian's MODULES=most includes drivers/block).
import { writeCpio } from "./cpio.ts";
import { DEFAULT_NBD_CLIENT, NBD_ATTACH, nbdClientBundle, nbdSpec } from "./nbd-client-bundle.ts";

export const NBD_OVERLAY_BOOT = "inetboot-nbd";

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
	modprobe nbd max_part=16 || panic "inetboot: this kernel's initrd has no nbd module"
	wait_for_udev 10
	configure_networking
	log_begin_msg "inetboot: attaching \${spec#*/} from \${spec%%/*} as /dev/nbd0"
	${NBD_ATTACH} "$spec" /dev/nbd0 -persist -systemd-mark ||
		panic "inetboot: nbd-client could not attach $spec"
	log_end_msg
	# root= names the device or its partition (/dev/nbd0p2, from the image's partition table).
	case "$ROOT" in
	/dev/nbd0*) ;;
	*) ROOT=/dev/nbd0 ;;
	esac
	local_mount_root
}
`;

/** Builds the overlay around the server's nbd-client (Debian package nbd-client). */
export async function buildNbdOverlay(nbdClient = DEFAULT_NBD_CLIENT): Promise<Buffer> {
  return writeCpio([
    { type: "dir", path: "scripts" },
    { type: "file", path: `scripts/${NBD_OVERLAY_BOOT}`, data: BOOT_SCRIPT, mode: 0o644 },
    ...(await nbdClientBundle(nbdClient)),
  ]);
}

/**
 * The kernel parameters for an initrd with nbd-client's own support (Debian's nbdroot=); `root`
 * is the device or a partition of it (/dev/nbd0p2).
 */
export function nbdRootCmdline(
  host: string,
  port: number,
  exportName: string,
  root = "/dev/nbd0",
): string {
  return `root=${root} nbdroot=${host}:${port}/${exportName} ip=dhcp`;
}

/** The kernel parameters that make the overlay mount `exportName` at HOST:PORT as the root. */
export function nbdOverlayCmdline(
  host: string,
  port: number,
  exportName: string,
  root = "/dev/nbd0",
): string {
  return `boot=${NBD_OVERLAY_BOOT} inetboot.nbd=${nbdSpec(host, port, exportName)} root=${root} ip=dhcp`;
}
