// A cloud-style Debian disk image for boot tests, built the way distributions lay them out:
// GPT with an EFI system partition (vfat, written with mtools) and an ext4 root (written with
// mkfs.ext4 -d at its offset: this host's kernel scans no partitions of loop files), the
// distribution's kernel and initramfs-tools initrd (installed by apt in the tree: no
// nbd-client in it), a Debian-style /boot/grub/grub.cfg naming root=PARTUUID=…, cloud-init
// waiting for a NoCloud datasource, and an `inetboot-report` unit that prints what cloud-init
// did on the serial console. The tree is built once per machine in /var/tmp.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { requireOrSkip, requireTool, runOk } from "./helpers.ts";
import type { Skipper } from "./helpers.ts";

const TREE = "/var/tmp/inetboot-test-cloud-bookworm-v1";
/** Marks the tree configured by this version of customize(). */
const CUSTOMIZED = "etc/inetboot-cloud-v3";
const MIRROR = process.env.DEBIAN_MIRROR ?? "http://deb.debian.org/debian";
export const ROOT_UUID = "7c1a3f52-5d0e-4b8b-9b6e-2f1c0de0b001";
export const ROOT_PARTUUID = "6a0c1e8e-3b7d-4f51-9c3a-1e2d3c4b5a02";
const ESP_PARTUUID = "0b3f6d1e-8a2c-4e7f-b5d9-3c1a2e4f6b03";
const DISK_GUID = "5d2c7e9a-1f3b-4c6d-8e0a-2b4c6d8e0f04";
/** The line inetboot-report prints once cloud-init is done. */
export const CLOUD_MARKER =
  /INETBOOT-CLOUD host=(\S*) iid=(\S*) keys=(\S*) runs=(\d+) root=(\S+) END/;

const REPORT_SCRIPT = `#!/bin/sh
# inetboot test: what cloud-init did, on the serial console.
sync
keys=$(cut -d" " -f3 /home/debian/.ssh/authorized_keys 2>/dev/null | tr "\\n" ,)
runs=$(cat /var/lib/inetboot-runcmd 2>/dev/null | wc -l)
iid=$(cat /var/lib/cloud/data/instance-id 2>/dev/null)
echo "INETBOOT-CLOUD host=$(hostname) iid=$iid keys=$keys runs=$runs root=$(findmnt -no SOURCE /) END" > /dev/ttyS0
`;

const REPORT_UNIT = `[Unit]
Description=inetboot test: report what cloud-init did
After=cloud-final.service getty.target
Wants=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/inetboot-report

[Install]
WantedBy=cloud-final.service
`;

/** The tree (built once: debootstrap, then apt for the kernel, cloud-init and sshd). */
function cloudTree(t: Skipper): string | null {
  if (existsSync(join(TREE, "etc/inetboot-cloud"))) {
    // A tree an older version of this file built gets today's configuration.
    if (!existsSync(join(TREE, CUSTOMIZED))) customize(TREE);
    return TREE;
  }
  if (process.getuid?.() !== 0) {
    requireOrSkip(t, `building ${TREE} needs root (debootstrap, chroot)`);
    return null;
  }
  if (!requireTool(t, "debootstrap", "debootstrap")) return null;
  const tmp = `${TREE}.tmp`;
  if (!installed(tmp)) install(tmp);
  customize(tmp);
  rmSync(TREE, { recursive: true, force: true });
  execFileSync("mv", [tmp, TREE]);
  return TREE;
}

/** Whether an earlier build left a whole install in `tmp` (dpkg has nothing half-done). */
function installed(tmp: string): boolean {
  if (!existsSync(join(tmp, "usr/bin/cloud-init"))) return false;
  return execFileSync("chroot", [tmp, "dpkg", "--audit"], { encoding: "utf8" }).trim() === "";
}

function install(tmp: string): void {
  rmSync(tmp, { recursive: true, force: true });
  execFileSync(
    "debootstrap",
    ["--variant=minbase", "--include=systemd-sysv,udev", "bookworm", tmp, MIRROR],
    { stdio: "ignore" },
  );
  // apt resolves what debootstrap cannot (cloud-init's python3-cryptography needs virtual packages).
  execFileSync("mount", ["-t", "proc", "proc", join(tmp, "proc")]);
  try {
    execFileSync(
      "chroot",
      [
        tmp,
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "linux-image-amd64",
        "initramfs-tools",
        "zstd",
        "cloud-init",
        "openssh-server",
        "ifupdown",
        "isc-dhcp-client",
        "sudo",
      ],
      { stdio: "ignore", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } },
    );
  } finally {
    execFileSync("umount", [join(tmp, "proc")]);
  }
  execFileSync("chroot", [tmp, "apt-get", "clean"]);
}

/** The cloud image's own configuration: fstab, grub.cfg, cloud-init's datasources, the report. */
function customize(tmp: string): void {
  const version = readdirSync(join(tmp, "boot"))
    .find((f) => f.startsWith("vmlinuz-"))
    ?.slice("vmlinuz-".length);
  if (!version) throw new Error("apt installed no kernel in the cloud image tree");
  writeFileSync(join(tmp, "etc/hostname"), "localhost\n");
  writeFileSync(
    join(tmp, "etc/fstab"),
    `UUID=${ROOT_UUID} / ext4 rw,discard,errors=remount-ro 0 1\nPARTUUID=${ESP_PARTUUID} /boot/efi vfat defaults,nofail 0 2\n`,
  );
  mkdirSync(join(tmp, "boot/efi"), { recursive: true });
  mkdirSync(join(tmp, "boot/grub"), { recursive: true });
  // As update-grub writes it for Debian's cloud images (console on the serial port).
  const args = `root=PARTUUID=${ROOT_PARTUUID} ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0`;
  writeFileSync(
    join(tmp, "boot/grub/grub.cfg"),
    `# generated for the inetboot cloud image test, in update-grub's form
set default="0"
set timeout=5
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-${ROOT_UUID}' {
\tload_video
\tinsmod gzio
\tinsmod part_gpt
\tinsmod ext2
\tsearch --no-floppy --fs-uuid --set=root ${ROOT_UUID}
\techo\t'Loading Linux ${version} ...'
\tlinux\t/boot/vmlinuz-${version} ${args}
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/boot/initrd.img-${version}
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-${ROOT_UUID}' {
\tmenuentry 'Debian GNU/Linux, with Linux ${version} (recovery mode)' --class debian $menuentry_id_option 'gnulinux-${version}-recovery-${ROOT_UUID}' {
\t\tlinux\t/boot/vmlinuz-${version} root=PARTUUID=${ROOT_PARTUUID} ro single
\t\tinitrd\t/boot/initrd.img-${version}
\t}
}
`,
  );
  writeFileSync(
    join(tmp, "etc/cloud/cloud.cfg.d/90-datasources.cfg"),
    "datasource_list: [ NoCloud, None ]\n",
  );
  writeFileSync(join(tmp, "usr/local/sbin/inetboot-report"), REPORT_SCRIPT, { mode: 0o755 });
  writeFileSync(join(tmp, "etc/systemd/system/inetboot-report.service"), REPORT_UNIT);
  // Pulled in by cloud-final (which runs after multi-user.target: a multi-user want would be
  // an ordering cycle).
  rmSync(join(tmp, "etc/systemd/system/multi-user.target.wants/inetboot-report.service"), {
    force: true,
  });
  mkdirSync(join(tmp, "etc/systemd/system/cloud-final.service.wants"), { recursive: true });
  execFileSync("ln", [
    "-sf",
    "/etc/systemd/system/inetboot-report.service",
    join(tmp, "etc/systemd/system/cloud-final.service.wants/"),
  ]);
  writeFileSync(join(tmp, "etc/inetboot-cloud"), `${version}\n`);
  writeFileSync(join(tmp, CUSTOMIZED), "");
}

/** The partitions sfdisk reads in `image` (start sector and sector count). */
function sfdiskParts(image: string): { start: number; size: number }[] {
  const json = JSON.parse(execFileSync("sfdisk", ["--json", image], { encoding: "utf8" })) as {
    partitiontable: { partitions: { start: number; size: number }[] };
  };
  return json.partitiontable.partitions;
}

/**
 * Builds the cloud image as a qcow2 in `dir` (the raw one removed): 3 GiB, GPT, a 32 MiB EFI
 * system partition and the ext4 root. Null (skipped) when the tools or root are missing.
 */
export async function buildCloudImage(
  t: Skipper,
  dir: string,
): Promise<{ qcow2: string; version: string } | null> {
  for (const [cmd, pkg] of [
    ["sgdisk", "gdisk"],
    ["mkfs.vfat", "dosfstools"],
    ["mcopy", "mtools"],
    ["mkfs.ext4", "e2fsprogs"],
    ["qemu-img", "qemu-utils"],
    ["sfdisk", "fdisk"],
  ]) {
    if (!requireTool(t, cmd, pkg)) return null;
  }
  const tree = cloudTree(t);
  if (!tree) return null;
  const version = execFileSync("cat", [join(tree, "etc/inetboot-cloud")], {
    encoding: "utf8",
  }).trim();
  const raw = join(dir, "cloud.raw");
  await runOk("truncate", ["-s", "3G", raw]);
  await runOk("sgdisk", [
    "-o",
    "-U",
    DISK_GUID,
    "-n",
    "1:2048:+32M",
    "-t",
    "1:ef00",
    "-c",
    "1:EFI System",
    "-u",
    `1:${ESP_PARTUUID}`,
    "-n",
    "2:0:0",
    "-t",
    "2:8304",
    "-c",
    "2:root",
    "-u",
    `2:${ROOT_PARTUUID}`,
    raw,
  ]);
  const [esp, root] = sfdiskParts(raw);
  const espImage = join(dir, "esp.img");
  await runOk("mkfs.vfat", ["-C", "-n", "EFI", espImage, String((esp.size * 512) / 1024)]);
  const cfg = join(dir, "grub-esp.cfg");
  writeFileSync(
    cfg,
    `search.fs_uuid ${ROOT_UUID} root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n`,
  );
  await runOk("mmd", ["-i", espImage, "::/EFI", "::/EFI/debian"]);
  await runOk("mcopy", ["-i", espImage, cfg, "::/EFI/debian/grub.cfg"]);
  await runOk("dd", [
    `if=${espImage}`,
    `of=${raw}`,
    "bs=512",
    `seek=${esp.start}`,
    "conv=notrunc,sparse",
    "status=none",
  ]);
  rmSync(espImage);
  await runOk("mkfs.ext4", [
    "-q",
    "-F",
    "-d",
    tree,
    "-U",
    ROOT_UUID,
    "-L",
    "root",
    "-E",
    `offset=${root.start * 512},root_owner=0:0`,
    raw,
    `${Math.floor((root.size * 512) / 4096) * 4}k`,
  ]);
  const qcow2 = join(dir, "cloud.qcow2");
  await runOk("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, qcow2]);
  rmSync(raw);
  return { qcow2, version };
}
