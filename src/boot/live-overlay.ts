// Initramfs overlays that make a live ISO's own initrd find the ISO on an NBD export, as if
// the CD were in the drive: nothing in the ISO changes, only the blocks the live system reads
// cross the network, and no RAM holds a copy. One overlay per initrd framework (the hook point
// differs, the mechanism does not): the server's nbd-client (nbd-client-bundle.ts) and a hook
// that attaches `inetboot.iso=HOST:PORT/EXPORT` as /dev/nbd0 before the live system looks for
// its medium.
//
//   initramfs-tools (casper, live-boot): a boot script, boot=inetboot-live, that brings the
//     network up, attaches the ISO, then hands over to the family's own boot script
//     (inetboot.boot=casper|live) whose medium scan finds /dev/nbd0. initramfs-tools runs
//     `mount_top`, `mount_premount` and `mountroot` of the script named by boot=; ours
//     attaches in mount_top and then loads the family's script, so the family's three run as
//     they would from a CD.
//   dracut (Fedora and relatives): an initqueue hook (online, when an interface is up with
//     rd.neednet=1 ip=dhcp; settled, for handlers that call no online hooks) that attaches the
//     ISO once; dmsquash-live waits for the ISO's volume label (root=live:CDLABEL=…), which
//     udev names once /dev/nbd0 holds it (not root=live:/dev/nbd0: the unattached device exists
//     from the start, and dmsquash-live would try it at once).
import { writeCpio } from "./cpio.ts";
import type { CpioEntry } from "./cpio.ts";
import { DEFAULT_NBD_CLIENT, NBD_ATTACH, nbdClientBundle } from "./nbd-client-bundle.ts";

export type LiveHook = "initramfs-tools" | "dracut";

/** The initramfs-tools boot script's name (boot=…; iso/recipes.ts puts it on the command line). */
export const LIVE_BOOT_SCRIPT = "inetboot-live";

const NO_NBD =
  "this initrd has no nbd module, so the ISO cannot be attached: give the entry lazy: false (the download recipe)";

const INITRAMFS_TOOLS_SCRIPT = `# inetboot: attach the live ISO from an NBD export, then boot the family's script.
# -*- shell-script -*-  Kernel parameters: boot=${LIVE_BOOT_SCRIPT} inetboot.boot=FAMILY
# (casper, live) inetboot.iso=HOST:PORT/EXPORT ip=dhcp.

inetboot_param()
{
	for x in $(cat /proc/cmdline); do
		case "$x" in
		"$1"=*) echo "\${x#*=}"; return ;;
		esac
	done
}

inetboot_attach()
{
	spec=$(inetboot_param inetboot.iso)
	[ -n "$spec" ] || panic "inetboot: no inetboot.iso=HOST:PORT/EXPORT on the kernel command line"
	modprobe nbd || panic "inetboot: ${NO_NBD}"
	wait_for_udev 10
	configure_networking
	log_begin_msg "inetboot: attaching the live ISO $spec as /dev/nbd0"
	${NBD_ATTACH} "$spec" /dev/nbd0 -persist -systemd-mark ||
		panic "inetboot: nbd-client could not attach $spec (is the server reachable?)"
	log_end_msg
	# The family's medium scan reads /dev/nbd0 once udev has seen it connected.
	wait_for_udev 10
}

mount_top()
{
	inetboot_attach
	family=$(inetboot_param inetboot.boot)
	[ -e "/scripts/\${family:-none}" ] ||
		panic "inetboot: no boot script /scripts/\${family:-(inetboot.boot= missing)} in this initrd"
	mount_top() { :; }
	mount_premount() { :; }
	mount_bottom() { :; }
	mountroot() { panic "inetboot: /scripts/$family has no mountroot"; }
	. "/scripts/$family"
	mount_top
}

mount_premount() { :; }
mount_bottom() { :; }
mountroot() { panic "inetboot: mount_top did not run"; }
`;

const DRACUT_HOOK = `#!/bin/sh
# inetboot: attach the live ISO from an NBD export once the network is up. Sourced by dracut's
# initqueue/online with the interface as $1 (network-legacy, NetworkManager) and, for network
# handlers that never call online hooks (systemd-networkd in dracut 059), by initqueue/settled
# on every pass until an address is up. Kernel parameter inetboot.iso=HOST:PORT/EXPORT; the ISO
# is then found by its label (root=live:CDLABEL=…).
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh
inetboot_spec=$(getarg inetboot.iso=)
inetboot_up() {
	[ -n "$1" ] && return 0
	command -v ip >/dev/null 2>&1 || return 1
	[ -n "$(ip -4 -o addr show scope global 2>/dev/null)" ]
}
if [ -n "$inetboot_spec" ] && [ ! -e /tmp/inetboot-iso-attached ] && inetboot_up "$1"; then
	if ! modprobe nbd; then
		warn "inetboot: ${NO_NBD}"
		: > /tmp/inetboot-iso-attached
	else
		info "inetboot: attaching the live ISO $inetboot_spec as /dev/nbd0"
		if ${NBD_ATTACH} "$inetboot_spec" /dev/nbd0 -persist -systemd-mark; then
			: > /tmp/inetboot-iso-attached
			udevadm trigger --action=change --sysname-match=nbd0 >/dev/null 2>&1
		else
			warn "inetboot: nbd-client could not attach $inetboot_spec (is the server reachable?)"
		fi
	fi
fi
`;

function hookEntries(hook: LiveHook): CpioEntry[] {
  if (hook === "initramfs-tools") {
    return [
      { type: "dir", path: "scripts" },
      { type: "file", path: `scripts/${LIVE_BOOT_SCRIPT}`, data: INITRAMFS_TOOLS_SCRIPT },
    ];
  }
  // Under usr/lib, not lib: the cpio writer adds the parent folders, and in a merged-/usr dracut
  // initrd (Fedora, Debian, Arch) /lib is a symlink to usr/lib that a "lib" folder entry would
  // replace (the kernel replaces an entry of another type), breaking the initrd.
  return ["online", "settled"].map((when): CpioEntry => ({
    type: "file",
    path: `usr/lib/dracut/hooks/initqueue/${when}/50-inetboot-iso.sh`,
    data: DRACUT_HOOK,
    mode: 0o755,
  }));
}

/** The overlay for initrds of `hook`'s framework, around the server's nbd-client. */
export async function buildLiveOverlay(
  hook: LiveHook,
  nbdClient = DEFAULT_NBD_CLIENT,
): Promise<Buffer> {
  return writeCpio([...hookEntries(hook), ...(await nbdClientBundle(nbdClient))]);
}
