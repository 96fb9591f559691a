// arm64 Debian parts for boot tests on an x86_64 host, without changing the host's
// architectures: apt downloads arm64 packages (the signed arm64 kernel with its modules,
// nbd-client and the libraries it needs, busybox-static) into a cache of its own, and they are
// unpacked there. From them: an arm64 root filesystem whose /sbin/init is the guest's own busybox,
// and an initrd that mounts an NBD root the way Debian's initramfs does (DHCP, nbd-client with
// nbdroot=HOST:PORT/EXPORT, mount, switch_root) with arm64 nbd-client and modules.
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeCpio } from "../src/boot/cpio.ts";
import type { CpioEntry } from "../src/boot/cpio.ts";
import { requireOrSkip, requireTool } from "./helpers.ts";
import type { Skipper } from "./helpers.ts";
import { modulesWithDeps, UDHCPC_SCRIPT } from "./marker-initrd.ts";

const CACHE = "/var/tmp/inetboot-test-arm64-bookworm-v1";
const KERNEL_PACKAGE = "linux-image-arm64";
/** nbd-client and the libraries it loads (Depends, recursively), and busybox. */
const PACKAGES = [
  "nbd-client",
  "libc6",
  "libgcc-s1",
  "libgnutls30",
  "libnl-3-200",
  "libnl-genl-3-200",
  "libp11-kit0",
  "libidn2-0",
  "libunistring2",
  "libtasn1-6",
  "libnettle8",
  "libhogweed6",
  "libgmp10",
  "libffi8",
  "busybox-static",
];

export interface Arm64Parts {
  /** The unpacked packages (an arm64 /). */
  root: string;
  kernel: string;
  kernelVersion: string;
}

/** apt for arm64 with its lists and cache in `dir` (the host's sources, none of its state). */
function apt(dir: string, args: string[], cwd?: string): void {
  const state = join(dir, "apt");
  mkdirSync(join(state, "lists", "partial"), { recursive: true });
  mkdirSync(join(state, "cache", "archives", "partial"), { recursive: true });
  writeFileSync(join(state, "status"), "", { flag: "a" });
  const o = [
    "-o", "APT::Architecture=arm64",
    "-o", "APT::Architectures::=arm64",
    "-o", `Dir::State::Lists=${join(state, "lists")}`,
    "-o", `Dir::State::status=${join(state, "status")}`,
    "-o", `Dir::Cache=${join(state, "cache")}`,
    "-o", "Debug::NoLocking=1",
    "-qq",
  ]; // prettier-ignore
  execFileSync("apt-get", [...o, ...args], { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function build(work: string): void {
  apt(work, ["update"]);
  const debs = join(work, "debs");
  mkdirSync(debs);
  // The metapackage names the current ABI's signed image (linux-image-6.1.0-NN-arm64).
  apt(work, ["download", KERNEL_PACKAGE, ...PACKAGES], debs);
  const meta = readdirSync(debs).find((f) => f.startsWith(`${KERNEL_PACKAGE}_`)) as string;
  const depends = execFileSync("dpkg-deb", ["-f", join(debs, meta), "Depends"]).toString();
  const image = /linux-image-[\w.-]+-arm64/.exec(depends)?.[0] as string;
  apt(work, ["download", image], debs);
  const root = join(work, "root");
  for (const deb of readdirSync(debs)) execFileSync("dpkg-deb", ["-x", join(debs, deb), root]);
  rmSync(debs, { recursive: true });
  rmSync(join(work, "apt"), { recursive: true });
}

/** The arm64 parts, downloaded and unpacked once into /var/tmp (reused by later runs). */
export function arm64Parts(t: Skipper): Arm64Parts | null {
  if (!existsSync(join(CACHE, "root"))) {
    if (process.getuid?.() !== 0) {
      requireOrSkip(t, `downloading arm64 packages into ${CACHE} needs root (apt)`);
      return null;
    }
    if (!requireTool(t, "apt-get", "apt") || !requireTool(t, "readelf", "binutils")) return null;
    const work = `${CACHE}.build-${process.pid}`;
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    try {
      build(work);
      renameSync(work, CACHE);
    } catch (err) {
      rmSync(work, { recursive: true, force: true });
      if (!existsSync(join(CACHE, "root"))) {
        requireOrSkip(t, `cannot download arm64 packages: ${(err as Error).message}`);
        return null;
      }
    }
  }
  const root = join(CACHE, "root");
  const kernelVersion = readdirSync(join(root, "lib", "modules"))[0];
  // The package ships no modules.dep (its postinst makes it): depmod reads arm64 modules too.
  if (!existsSync(join(root, "lib", "modules", kernelVersion, "modules.dep"))) {
    if (!requireTool(t, "depmod", "kmod")) return null;
    execFileSync("depmod", ["-b", root, kernelVersion]);
  }
  return { root, kernel: join(root, "boot", `vmlinuz-${kernelVersion}`), kernelVersion };
}

/** `file` and the shared libraries it loads (DT_NEEDED, recursively), as paths under `root`. */
function withLibraries(root: string, file: string): string[] {
  const dirs = ["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"];
  const found = new Set<string>([file]);
  const queue = [file];
  while (queue.length) {
    const elf = queue.pop() as string;
    const dynamic = execFileSync("readelf", ["-d", join(root, elf)]).toString();
    for (const [, lib] of dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)) {
      const rel = dirs.map((d) => join(d, lib)).find((p) => existsSync(join(root, p)));
      if (!rel) throw new Error(`${lib} (needed by ${elf}) is not in the arm64 parts`);
      if (!found.has(rel)) {
        found.add(rel);
        queue.push(rel);
      }
    }
  }
  return [...found];
}

/** Files of the unpacked root at the same paths, symlinks followed (the initrd holds copies). */
function copied(root: string, paths: string[]): CpioEntry[] {
  return paths.map((p) => ({
    type: "file",
    path: p,
    data: readFileSync(join(root, p)),
    mode: 0o755,
  }));
}

/** /init's first lines: busybox, the kernel's file systems, `modules`, a DHCP lease on eth0. */
function initHead(modules: string[], marker: string): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${modules.join(" ")}; do insmod /$m; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -q -n -t 10 -s /udhcpc.sh || echo "${marker}-NO-DHCP"
`;
}

/** An arm64 initrd of busybox, `modules` (with what they need), `files` and /init. */
function arm64Initrd(
  parts: Arm64Parts,
  names: string[],
  init: (modules: string[]) => string,
  files: string[] = [],
): Buffer {
  const { root } = parts;
  const modules = modulesWithDeps(join(root, "lib", "modules", parts.kernelVersion), [
    "virtio_pci",
    "virtio_net",
    ...names,
  ]).map((m) => m.slice(root.length + 1));
  return writeCpio([
    ...["proc", "sys", "dev", "root", "tmp", "bin"].map((d): CpioEntry => ({
      type: "dir",
      path: d,
    })),
    { type: "chardev", path: "dev/console", major: 5, minor: 1 },
    ...copied(root, ["bin/busybox", ...files, ...modules]),
    { type: "file", path: "udhcpc.sh", data: UDHCPC_SCRIPT, mode: 0o755 },
    { type: "file", path: "init", data: init(modules), mode: 0o755 },
  ]);
}

/**
 * An arm64 initrd that mounts root= as Debian's initramfs-tools does: /dev/nbd0 attached from
 * nbdroot=HOST:PORT/EXPORT (inetboot's image entries' command line) with arm64 nbd-client, or a
 * virtio disk (/dev/vda, `inetboot run --kernel`).
 */
export function arm64RootInitrd(parts: Arm64Parts, marker: string): Buffer {
  const loader = "lib/ld-linux-aarch64.so.1";
  const libs = withLibraries(parts.root, "sbin/nbd-client");
  // ext4 asks for crc32c by name at mount time (not a module dependency).
  const names = ["virtio_blk", "nbd", "ext4", "crc32c_generic"];
  return arm64Initrd(
    parts,
    names,
    (
      modules,
    ) => `${initHead(modules, marker)}spec=$(sed -n 's/.*nbdroot=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$spec" ]; then
  host=\${spec%%:*}; rest=\${spec#*:}; port=\${rest%%/*}; name=\${rest#*/}
  echo "${marker}-INITRD attaching $name from $host:$port"
  /${loader} --library-path /lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu /sbin/nbd-client "$host" "$port" /dev/nbd0 -N "$name" || echo "${marker}-NBD-FAILED"
fi
dev=$(sed -n 's|.*root=\\(/dev/[^ ]*\\).*|\\1|p' /proc/cmdline)
mount -t ext4 "$dev" /root || echo "${marker}-MOUNT-FAILED"
exec switch_root /root /sbin/init
`,
    [loader, ...libs],
  );
}

/**
 * An arm64 initrd standing in for a live system's download recipe (live-boot's fetch=URL):
 * it downloads URL with the guest's own busybox and prints `marker fetched=BYTES cmdline=…`.
 */
export function arm64FetchInitrd(parts: Arm64Parts, marker: string): Buffer {
  return arm64Initrd(
    parts,
    [],
    (
      modules,
    ) => `${initHead(modules, marker)}url=$(sed -n 's/.*fetch=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
wget -q -O /tmp/fetched "$url" || echo "${marker}-FETCH-FAILED $url"
echo "${marker} arch=$(uname -m) fetched=$(wc -c < /tmp/fetched) cmdline=$(cat /proc/cmdline)"
poweroff -f
`,
  );
}

/** A root tree in `dir` whose /sbin/init (the guest's own busybox) prints `marker` and stops. */
export function arm64RootTree(parts: Arm64Parts, dir: string, marker: string): string {
  const tree = join(dir, "arm64-root");
  for (const d of ["bin", "sbin", "proc", "dev", "sys"])
    mkdirSync(join(tree, d), { recursive: true });
  writeFileSync(join(tree, "bin", "busybox"), readFileSync(join(parts.root, "bin", "busybox")));
  chmodSync(join(tree, "bin", "busybox"), 0o755);
  writeFileSync(
    join(tree, "sbin", "init"),
    `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "${marker} arch=$(/bin/busybox uname -m) root=$(/bin/busybox awk '$2 == "/" { print $1, $3 }' /proc/mounts)"
/bin/busybox poweroff -f
`,
  );
  chmodSync(join(tree, "sbin", "init"), 0o755);
  return tree;
}
