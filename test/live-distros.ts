// The parts of real live ISOs of two families, built from Debian bookworm packages once per
// machine and kept in /var/tmp, for tests that pack them into ISOs (or serve them) and boot them:
//  - liveBootParts: a Debian live system as live-build makes it (live-boot's initramfs-tools
//    hooks; the ISO holds live/vmlinuz-KVER, live/initrd.img-KVER, live/filesystem.squashfs);
//  - dracutLiveParts: a Fedora-style live system (dracut 059's dmsquash-live; the ISO holds
//    LiveOS/squashfs.img and is found by root=live:CDLABEL=…).
// Both guests are named LIVE_HOSTNAME, get a getty on ttyS0 from console=ttyS0, and print
// LIVE_MARKER on ttyS0 before it. A build works in DIR.build-PID and renames it to DIR when
// complete, so a killed build never leaves a half cache (its leftovers are removed by the next).
// Building needs root and the network, takes minutes and blocks the event loop (synchronous
// commands): call these from a before() hook; once cached they return at once, also unprivileged.
import { spawnSync } from "node:child_process";
import type { SpawnSyncOptions } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { debianRootfs } from "./debian-rootfs.ts";
import { requireOrSkip, requireTool } from "./helpers.ts";
import type { Skipper } from "./helpers.ts";

const MIRROR = process.env.DEBIAN_MIRROR ?? "http://deb.debian.org/debian";
// Bump the suffix when a recipe changes: the old cache is then ignored (remove it by hand).
const LIVE_BOOT_DIR = "/var/tmp/inetboot-test-live-boot-bookworm-v1";
const DRACUT_DIR = "/var/tmp/inetboot-test-dracut-live-bookworm-v2";

/** The live guests' host name: their login prompt reads "inetboot-live login:". */
export const LIVE_HOSTNAME = "inetboot-live";
/** The line the guests print on ttyS0 once up (before the getty): medium, / line, MemTotal kB. */
export const LIVE_MARKER = /INETBOOT-LIVE-UP medium=(\S*) root=(.*?) mem=(\d+) END/;

export interface LiveParts {
  kernel: string;
  initrd: string;
  squashfs: string;
  kernelVersion: string;
}

/** Runs a command with its output captured; a failure throws with the tail of its stderr. */
function sh(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 28, ...opts });
  if (r.status === 0) return String(r.stdout);
  const tail = (String(r.stderr ?? "").trim() || String(r.stdout ?? "")).slice(-3000);
  const why = r.error?.message ?? (r.signal ? `signal ${r.signal}` : `exit ${r.status}`);
  throw new Error(`${cmd} ${args.join(" ")} failed (${why}):\n${tail}`);
}

const CHROOT_ENV = {
  PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/root",
  LC_ALL: "C.UTF-8",
  DEBIAN_FRONTEND: "noninteractive",
};

/**
 * Runs `body` with proc, sys and dev mounted in `tree` and a policy-rc.d that keeps services
 * from starting during installs; unmounts (lazily if busy) and removes policy-rc.d after, even
 * when `body` throws. `run(...)` runs a command in the chroot.
 */
function inChroot(tree: string, body: (run: (...cmd: string[]) => string) => void): void {
  const policy = join(tree, "usr/sbin/policy-rc.d");
  writeFileSync(policy, "#!/bin/sh\nexit 101\n");
  chmodSync(policy, 0o755);
  const mounted: string[] = [];
  try {
    for (const [dir, args] of [
      ["proc", ["-t", "proc", "proc"]],
      ["sys", ["-t", "sysfs", "sys"]],
      ["dev", ["--bind", "/dev"]],
    ] as const) {
      sh("mount", [...args, join(tree, dir)]);
      mounted.push(join(tree, dir));
    }
    body((...cmd) => sh("chroot", [tree, ...cmd], { env: CHROOT_ENV }));
  } finally {
    for (const dir of mounted.reverse()) {
      if (spawnSync("umount", [dir]).status !== 0) spawnSync("umount", ["-l", dir]);
    }
    rmSync(policy, { force: true });
  }
}

/** Removes a build folder: unmounts what a killed build left mounted in it, then deletes it. */
function removeBuild(dir: string): void {
  const mounts = readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[1] ?? "")
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort()
    .reverse();
  for (const m of mounts) spawnSync("umount", ["-l", m]);
  // --one-file-system: never follow a mount that is still there (a bound /dev) into the host.
  spawnSync("rm", ["-rf", "--one-file-system", dir]);
}

/** The cached parts in `dir` when complete (kernel-version is written last), else null. */
function partsIn(dir: string, squashfs: string): LiveParts | null {
  const version = join(dir, "kernel-version");
  if (!existsSync(version)) return null;
  return {
    kernel: join(dir, "vmlinuz"),
    initrd: join(dir, "initrd.img"),
    squashfs: join(dir, squashfs),
    kernelVersion: readFileSync(version, "utf8").trim(),
  };
}

/**
 * The parts cached in `dir`, built first when missing by `build(work)` (which returns the kernel
 * version) in DIR.build-PID.
 */
function cached(t: Skipper, dir: string, squashfs: string, build: (work: string) => string) {
  const parts = partsIn(dir, squashfs);
  if (parts) return parts;
  if (process.getuid?.() !== 0) {
    requireOrSkip(t, `building ${dir} once needs root (debootstrap, chroot, mounts)`);
    return null;
  }
  if (!requireTool(t, "debootstrap", "debootstrap")) return null;
  if (!requireTool(t, "mksquashfs", "squashfs-tools")) return null;
  // Leftovers of killed builds (their process is gone) would fill the disk.
  for (const name of readdirSync(dirname(dir))) {
    const pid = new RegExp(`^${basename(dir)}\\.build-(\\d+)$`).exec(name)?.[1];
    if (pid && gone(Number(pid))) removeBuild(join(dirname(dir), name));
  }
  const work = `${dir}.build-${process.pid}`;
  removeBuild(work);
  mkdirSync(work);
  try {
    writeFileSync(join(work, "kernel-version"), build(work));
    try {
      renameSync(work, dir);
    } catch (err) {
      if (!partsIn(dir, squashfs)) throw err; // else a parallel build won: ours goes
    }
  } finally {
    removeBuild(work);
  }
  return partsIn(dir, squashfs);
}

function gone(pid: number): boolean {
  try {
    return !process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

const MARKER_SCRIPT = `#!/bin/sh
medium=$(awk '$2=="/run/live/medium"||$2=="/run/initramfs/live"{m=$1} END{print m}' /proc/mounts)
root=$(awk '$2=="/"{l=$0} END{print l}' /proc/mounts)
mem=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
line="INETBOOT-LIVE-UP medium=$medium root=$root mem=$mem END"
echo "$line" > /dev/ttyS0
grep -qw ttyS0 /sys/class/tty/console/active || echo "$line" > /dev/console
`;
const MARKER_UNIT = `[Unit]
Description=inetboot live marker on the serial console
After=local-fs.target
Before=getty.target serial-getty@ttyS0.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/inetboot-live-marker
[Install]
WantedBy=multi-user.target
`;

/**
 * WORK/tree: a copy of the debootstrap tree pointed at MIRROR, named LIVE_HOSTNAME, with an empty
 * machine-id (each boot gets its own, as on live media: DHCP client ids differ) and the marker
 * service: a oneshot before the gettys that prints LIVE_MARKER on ttyS0 (and on /dev/console when
 * that is not ttyS0). The medium is live-boot's /run/live/medium or dracut's /run/initramfs/live.
 */
function liveTree(work: string): string {
  const tree = join(work, "tree");
  sh("cp", ["-a", debianRootfs(), tree]);
  writeFileSync(join(tree, "etc/apt/sources.list"), `deb ${MIRROR} bookworm main\n`);
  copyFileSync("/etc/resolv.conf", join(tree, "etc/resolv.conf"));
  writeFileSync(join(tree, "etc/hostname"), `${LIVE_HOSTNAME}\n`);
  writeFileSync(join(tree, "etc/hosts"), `127.0.0.1 localhost\n127.0.1.1 ${LIVE_HOSTNAME}\n`);
  rmSync(join(tree, "etc/machine-id"));
  writeFileSync(join(tree, "etc/machine-id"), "");
  const script = join(tree, "usr/local/sbin/inetboot-live-marker");
  writeFileSync(script, MARKER_SCRIPT);
  chmodSync(script, 0o755);
  const unit = "etc/systemd/system/inetboot-live-marker.service";
  writeFileSync(join(tree, unit), MARKER_UNIT);
  mkdirSync(join(tree, "etc/systemd/system/multi-user.target.wants"), { recursive: true });
  symlinkSync(`/${unit}`, join(tree, unit.replace(/[^/]+$/, "multi-user.target.wants/$&")));
  return tree;
}

/** apt-get install of `pkgs` in the chroot, without recommends, keeping existing config files. */
function aptIn(run: (...cmd: string[]) => string, pkgs: string): void {
  const apt = "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold";
  run(...`${apt} ${pkgs}`.split(" "));
}

/** Checks `listing` (of an initrd) holds each of `patterns`; throws with the ones missing. */
function requireInInitrd(listing: string, what: string, patterns: RegExp[]): void {
  const missing = patterns.filter((p) => !p.test(listing));
  if (missing.length) throw new Error(`${what} lacks ${missing.map(String).join(", ")}`);
}

/** The modules the tests boot with: NBD, the live file systems, QEMU's NICs. */
const MODULES = ["nbd", "squashfs", "overlay", "isofs", "e1000", "virtio_net"];
const moduleIn = (m: string): RegExp => new RegExp(`/${m}\\.ko(\\.[a-z]+)?$`, "m");

/**
 * Moves the kernel and `initrd` (KVER: the kernel version) out of TREE/boot into WORK (vmlinuz,
 * initrd.img), removes /boot's
 * kernel files, the root's kernel links and apt's downloads (as live-build does). Returns the
 * kernel version.
 */
function extractBoot(work: string, tree: string, initrd: string): string {
  const kver = kernelIn(tree);
  copyFileSync(join(tree, "boot", `vmlinuz-${kver}`), join(work, "vmlinuz"));
  copyFileSync(join(tree, initrd.replace("KVER", kver)), join(work, "initrd.img"));
  for (const f of readdirSync(join(tree, "boot"))) {
    if (/^(vmlinuz|initrd|System\.map|config)/.test(f)) rmSync(join(tree, "boot", f));
  }
  for (const f of ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"]) {
    rmSync(join(tree, f), { force: true });
  }
  sh("chroot", [tree, "apt-get", "clean"], { env: CHROOT_ENV });
  rmSync(join(tree, "var/lib/apt/lists"), { recursive: true });
  mkdirSync(join(tree, "var/lib/apt/lists/partial"), { recursive: true });
  return kver;
}

/** The version of the kernel installed in `tree`. */
function kernelIn(tree: string): string {
  const kver = readdirSync(join(tree, "lib/modules"))[0];
  if (!kver) throw new Error(`no kernel installed in ${tree}`);
  return kver;
}

/** Squashes `dir` into `out` (compressor flags in `comp`) and removes `dir`. */
function squash(dir: string, out: string, comp: string[]): void {
  sh("nice", ["-n", "19", "mksquashfs", dir, out, "-noappend", "-no-progress", ...comp]);
  removeBuild(dir);
}

/**
 * A Debian live system as live-build makes it: the debootstrap tree plus linux-image-amd64,
 * live-boot and a realistic set of tools, with live-boot's initramfs-tools initrd (MODULES=most
 * brings nbd, isofs and the NICs, live-boot's hook squashfs and overlay; all are listed in
 * modules.d anyway, and checked). The squashfs is xz, live-build's default (`-comp xz`, 128 KiB
 * blocks): 790 MB of files (~400 MB of them kernel modules) in 193 MB. Boot with `boot=live`
 * (live-boot finds the medium by itself). First build 5-6.5 min on 2 cores (most of it xz).
 */
export function liveBootParts(t: Skipper): Promise<LiveParts | null> {
  return Promise.resolve().then(() =>
    cached(t, LIVE_BOOT_DIR, "filesystem.squashfs", (work) => {
      const tree = liveTree(work);
      mkdirSync(join(tree, "usr/share/initramfs-tools/modules.d"), { recursive: true });
      writeFileSync(join(tree, "usr/share/initramfs-tools/modules.d/inetboot"), MODULES.join("\n"));
      inChroot(tree, (run) => {
        run("apt-get", "update", "-q");
        aptIn(
          run,
          "linux-image-amd64 live-boot live-boot-initramfs-tools perl python3 vim less man-db " +
            "iproute2 procps curl openssh-client git ca-certificates bash-completion rsync file",
        );
        requireInInitrd(
          run("lsinitramfs", `/boot/initrd.img-${kernelIn(tree)}`),
          "live-boot's initrd",
          [/^scripts\/live$/m, /(^|\/)lib\/live\/boot\//m, ...MODULES.map(moduleIn)],
        );
      });
      const kver = extractBoot(work, tree, "boot/initrd.img-KVER");
      squash(tree, join(work, "filesystem.squashfs"), ["-comp", "xz"]);
      return kver;
    }),
  );
}

/**
 * A Fedora-style live system from Debian's dracut 059: the debootstrap tree plus
 * linux-image-amd64 and dracut (which replaces initramfs-tools), and a generic initrd with
 * dmsquash-live and network. Boot with `root=live:CDLABEL=<label> rd.live.image` (the ISO holds
 * LiveOS/squashfs.img). The squashfs holds LiveOS/rootfs.img, an ext4 image of the tree (2 GiB,
 * sparse), as Fedora's did through 38: dmsquash-live-root.sh (059) also takes a squashfs holding
 * the tree itself (it has /proc) but then needs overlayfs, and that fails under the systemd
 * initrd Debian's dracut builds: the generator's overlay sysroot.mount runs before anything
 * creates /run/overlayfs ("overlayfs: failed to resolve '/run/overlayfs'"), and the mount hook
 * that would is only armed by rd.live.overlay.overlayfs=1, so the boot ends in the emergency
 * shell. rootfs.img goes the device-mapper way (a snapshot in RAM, /dev/mapper/live-rw).
 * `network` is served by network-legacy (dhclient, arping, ip and pgrep: dracut-network brings
 * the first two, iproute2 and procps the others; when any is missing dracut drops it silently).
 * Else `network` picks systemd-networkd (systemd ships it), which needs dbus-daemon or
 * dbus-broker in the tree and fails without ("module 'systemd-networkd' depends on 'dbus'"),
 * even in the kernel's postinst run; network-legacy, listed in dracut.conf.d, is chosen first.
 * The squashfs is zstd (as current Fedora's): 590 MB of files in 155 MB; first build ~5 min.
 */
export function dracutLiveParts(t: Skipper): Promise<LiveParts | null> {
  return Promise.resolve().then(() =>
    cached(t, DRACUT_DIR, "squashfs.img", (work) => {
      const tree = liveTree(work);
      mkdirSync(join(tree, "etc/dracut.conf.d"));
      writeFileSync(
        join(tree, "etc/dracut.conf.d/50-inetboot.conf"),
        'add_dracutmodules+=" network-legacy "\n',
      );
      inChroot(tree, (run) => {
        run("apt-get", "update", "-q");
        // dracut first: the kernel's postinst then runs it with all its modules in place.
        aptIn(run, "dracut dracut-live dracut-network iproute2 procps");
        aptIn(run, "linux-image-amd64");
        const initrd = "/boot/initrd-dracut.img";
        run("dracut", "--no-hostonly", "--force", "--add", "dmsquash-live network",
          "--add-drivers", MODULES.join(" "), "--kver", kernelIn(tree), initrd); // prettier-ignore
        requireInInitrd(run("lsinitrd", initrd), "dracut's initrd", [
          /\/dmsquash-live-root$/m,
          /\/dhclient$/m,
          ...MODULES.map(moduleIn),
        ]);
      });
      const kver = extractBoot(work, tree, "boot/initrd-dracut.img");
      const liveOS = join(work, "squashfs/LiveOS");
      mkdirSync(liveOS, { recursive: true });
      sh("mkfs.ext4", ["-q", "-F", "-d", tree, "-E", "root_owner=0:0", "-L", "LiveOS_rootfs",
        join(liveOS, "rootfs.img"), "2G"]); // prettier-ignore
      removeBuild(tree);
      squash(join(work, "squashfs"), join(work, "squashfs.img"), ["-comp", "zstd"]);
      return kver;
    }),
  );
}
