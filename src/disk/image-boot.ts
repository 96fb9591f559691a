// What a disk image boots, read from the image itself over any BlockDevice (a release streamed
// and verified chunk by chunk, a raw file): its partitions, the filesystems in them, the default
// kernel and initrd with their command line (GRUB's grub.cfg, BLS entries, or the /vmlinuz and
// /initrd.img links with /etc/kernel/cmdline), and which partition is the root the command
// line names — so a server can boot the image's own kernel with the root on the image's
// partition as the machine's NBD device sees it (/dev/nbd0pN).
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BlockDevice } from "../block/block-device.ts";
import {
  blsDefault,
  cmdlineValue,
  grubDefault,
  MAX_CONFIG,
  MAX_ENTRIES,
  withoutArgs,
} from "./boot-config.ts";
import type { BootChoice } from "./boot-config.ts";
import { findBootFiles } from "./boot-files.ts";
import type { BootFiles } from "./boot-files.ts";
import { Ext4 } from "./ext4.ts";
import { readPartitions } from "./partitions.ts";
import type { Partition, PartitionTable } from "./partitions.ts";

/** A filesystem found in the image. */
export interface ImageFilesystem {
  /** Its partition's number (Linux's), or null for a filesystem on the whole image. */
  partition: number | null;
  partUuid?: string;
  type: string;
  label?: string;
  uuid?: string;
  /** Why it was not read ("xfs: not read yet"), when it was not. */
  unread?: string;
  boot?: BootFiles | null;
}

export interface ImageBoot {
  /** The kernel and initrds: a filesystem (index in `filesystems`) and a path in it. */
  kernel: { fs: number; path: string; size: number };
  initrds: { fs: number; path: string; size: number }[];
  /** The kernel version the file name says ("6.1.0-18-amd64"), when it does. */
  version?: string;
  /** The image's own command line, without root= and BOOT_IMAGE=. */
  cmdline: string;
  /** Where the choice came from ("grub.cfg 'Debian GNU/Linux'", "/vmlinuz link"). */
  from: string;
  /** root= as the image says it ("PARTUUID=…"), when it does. */
  rootSpec?: string;
  /** The root filesystem (index in `filesystems`). */
  root: number;
  /** The root's device on an NBD client that scans partitions: /dev/nbd0p2, /dev/nbd0. */
  nbdRoot: string;
}

export interface ImageFacts {
  table: PartitionTable;
  filesystems: ImageFilesystem[];
  boot: ImageBoot | null;
  /** Why no boot was found, or what was odd about it. */
  problems: string[];
}

/** Filesystems this reader names but does not read, by magic. */
async function otherFilesystem(
  dev: BlockDevice,
  offset: number,
  size: number,
): Promise<string | null> {
  if (size < 0x10048) return null;
  const head = await dev.read(offset, 512);
  if (head.toString("latin1", 0, 4) === "XFSB") return "xfs";
  if ((await dev.read(offset + 0x10040, 8)).toString("latin1") === "_BHRfS_M") return "btrfs";
  if (head.readUInt16LE(510) === 0xaa55 && /FAT/.test(head.toString("latin1", 0x36, 0x5a)))
    return "vfat";
  if (head.toString("latin1", 0, 10) === "LUKS\xba\xbe\0\x02") return "LUKS";
  return null;
}

/** The image's filesystems: each partition's (or the whole image's) and the ext4 readers. */
async function filesystems(
  dev: BlockDevice,
  table: PartitionTable,
): Promise<{ list: ImageFilesystem[]; readers: (Ext4 | null)[] }> {
  const places: { p: Partition | null; offset: number; size: number }[] =
    table.scheme === "none"
      ? [{ p: null, offset: 0, size: dev.size }]
      : table.partitions.map((p) => ({ p, offset: p.offset, size: p.size }));
  const list: ImageFilesystem[] = [];
  const readers: (Ext4 | null)[] = [];
  for (const { p, offset, size } of places) {
    const where = { partition: p?.number ?? null, partUuid: p?.partUuid };
    try {
      const fs = await Ext4.open(dev, offset, size);
      if (fs) {
        list.push({
          ...where,
          type: "ext4",
          label: fs.info.label,
          uuid: fs.info.uuid,
          boot: await findBootFiles(fs),
        });
        readers.push(fs);
        continue;
      }
      const other = await otherFilesystem(dev, offset, size);
      if (other) {
        list.push({ ...where, type: other, unread: "not read by inetboot yet (it reads ext4)" });
        readers.push(null);
      }
    } catch (err) {
      list.push({ ...where, type: "ext4", unread: (err as Error).message });
      readers.push(null);
    }
  }
  return { list, readers };
}

async function fileText(fs: Ext4, path: string, max: number): Promise<string | undefined> {
  const node = await fs.lookup(path);
  if (!node || Ext4.kind(node) !== "file") return undefined;
  return (await fs.read(node, max)).toString("utf8");
}

/** The boot choice the filesystem's own configuration makes, if it has one. */
async function configuredChoice(fs: Ext4): Promise<BootChoice | null> {
  let env = "";
  for (const dir of ["/boot/grub", "/boot/grub2", "/grub", "/grub2"]) {
    const cfg = await fileText(fs, `${dir}/grub.cfg`, MAX_CONFIG);
    if (cfg === undefined) continue;
    env = (await fileText(fs, `${dir}/grubenv`, 4096)) ?? "";
    const choice = grubDefault(cfg, env);
    if (choice)
      return { ...choice, from: `${dir}/grub.cfg ${choice.from.slice("grub.cfg ".length)}` };
  }
  // BLS entries (Fedora's grub.cfg only runs blscfg; systemd-boot has no grub.cfg at all).
  for (const bls of ["/boot/loader/entries", "/loader/entries"]) {
    const folder = await fs.lookup(bls);
    if (!folder || Ext4.kind(folder) !== "dir") continue;
    const files = new Map<string, string>();
    const names = [...(await fs.list(folder)).keys()].filter((n) => n.endsWith(".conf"));
    for (const name of names.slice(0, MAX_ENTRIES)) {
      const text = await fileText(fs, `${bls}/${name}`, 65536);
      if (text !== undefined) files.set(name, text);
    }
    const entry = blsDefault(files, env);
    if (entry) return entry;
  }
  return null;
}

const KERNEL_VERSION = /(?:vmlinuz|vmlinux|Image)-(.+)$/;

/** The filesystem `spec` (root=) names, by UUID, PARTUUID, LABEL or device name. */
function rootNamed(spec: string, list: ImageFilesystem[]): number {
  const [key, value = ""] = spec.includes("=")
    ? [spec.slice(0, spec.indexOf("=")), spec.slice(spec.indexOf("=") + 1)]
    : ["", spec];
  const v = value.toLowerCase();
  const by = (f: (fs: ImageFilesystem) => string | number | null | undefined): number =>
    list.findIndex((fs) => String(f(fs) ?? "").toLowerCase() === v);
  if (key === "UUID") return by((fs) => fs.uuid);
  if (key === "PARTUUID") return by((fs) => fs.partUuid);
  if (key === "LABEL") return by((fs) => fs.label);
  const disk = /^\/dev\/disk\/by-(uuid|partuuid|label)\/(.+)$/.exec(spec);
  if (disk)
    return rootNamed(
      `${{ uuid: "UUID", partuuid: "PARTUUID", label: "LABEL" }[disk[1]]}=${disk[2]}`,
      list,
    );
  const n = /^\/dev\/(?:[shv]d[a-z]|xvd[a-z]|nvme\d+n\d+p|mmcblk\d+p|nbd\d+p)(\d+)$/.exec(
    spec,
  )?.[1];
  if (n) return list.findIndex((fs) => fs.partition === Number(n));
  return -1;
}

/** Finds what the image at `dev` boots. */
export async function findImageBoot(dev: BlockDevice): Promise<ImageFacts> {
  const table = await readPartitions(dev);
  const { list, readers } = await filesystems(dev, table);
  const facts: ImageFacts = { table, filesystems: list, boot: null, problems: [] };
  // The configured choice (GRUB, BLS) of any filesystem, else the default links.
  let choice: { fs: number; c: BootChoice } | undefined;
  for (let i = 0; i < readers.length && !choice; i++) {
    const fs = readers[i];
    const c = fs
      ? await configuredChoice(fs).catch((err: Error) => {
          facts.problems.push(`the boot configuration could not be read: ${err.message}`);
          return null;
        })
      : null;
    if (c) choice = { fs: i, c };
  }
  const locate = async (
    path: string,
    prefer: number,
  ): Promise<{ fs: number; path: string; size: number } | null> => {
    const order = [prefer, ...readers.keys()].filter((i, k, all) => i >= 0 && all.indexOf(i) === k);
    for (const i of order) {
      const fs = readers[i];
      if (!fs) continue;
      for (const p of [path, `/boot${path}`]) {
        const node = await fs.lookup(p).catch(() => null);
        if (node && Ext4.kind(node) === "file") return { fs: i, path: p, size: node.size };
      }
    }
    return null;
  };
  let kernel: { fs: number; path: string; size: number } | null = null;
  let initrds: { fs: number; path: string; size: number }[] = [];
  let cmdline = "";
  let from = "";
  if (choice) {
    kernel = await locate(choice.c.kernel, choice.fs);
    if (!kernel)
      facts.problems.push(`${choice.c.from} boots ${choice.c.kernel}, which is not in the image`);
    for (const p of choice.c.initrds) {
      const found = await locate(p, kernel?.fs ?? choice.fs);
      if (found) initrds.push(found);
      else facts.problems.push(`${choice.c.from} names initrd ${p}, which is not in the image`);
    }
    cmdline = choice.c.cmdline;
    from = choice.c.from;
  }
  if (!kernel) {
    const i = list.findIndex((fs) => fs.boot?.kernels.length);
    const b = list[i]?.boot;
    if (b) {
      const path =
        b.defaultKernel ??
        [...b.kernels].sort((x, y) => x.localeCompare(y, "en", { numeric: true })).at(-1)!;
      kernel = await locate(path, i);
      const version = KERNEL_VERSION.exec(path)?.[1];
      const initrd = b.defaultInitrd ?? b.initrds.find((p) => version && p.includes(version));
      initrds = initrd ? [await locate(initrd, i)].filter((x) => x !== null) : [];
      cmdline = b.cmdline ?? "";
      from = b.defaultKernel ? "the /vmlinuz link" : "the newest kernel in /boot";
      if (b.cmdline) from += " with /etc/kernel/cmdline";
    }
  }
  if (!kernel) {
    facts.problems.push(
      list.some((fs) => fs.unread)
        ? `no kernel found in the filesystems read (${list
            .filter((fs) => fs.unread)
            .map((fs) => `${fs.type}: ${fs.unread}`)
            .join("; ")}): give the entry kernel: and initrd:`
        : "no kernel found (no grub.cfg, BLS entries or /boot/vmlinuz-*): give the entry kernel: and initrd:",
    );
    return facts;
  }
  const rootSpec = cmdlineValue(cmdline, "root");
  let root = rootSpec ? rootNamed(rootSpec, list) : -1;
  if (rootSpec && root < 0)
    facts.problems.push(`root=${rootSpec} names no filesystem in the image`);
  if (root < 0) {
    // The filesystem that holds an installed system.
    for (let i = 0; i < readers.length && root < 0; i++) {
      const fs = readers[i];
      if (fs && (await fs.lookup("/etc/fstab").catch(() => null))) root = i;
    }
  }
  if (root < 0) {
    facts.problems.push("no root filesystem found (root= names none, and none holds /etc/fstab)");
    return facts;
  }
  const part = list[root].partition;
  facts.boot = {
    kernel,
    initrds,
    version: KERNEL_VERSION.exec(kernel.path)?.[1],
    cmdline: withoutArgs(cmdline, ["root", "BOOT_IMAGE"]),
    from,
    rootSpec,
    root,
    nbdRoot: part === null ? "/dev/nbd0" : `/dev/nbd0p${part}`,
  };
  return facts;
}

/** Reads a file the boot names (at most `max` bytes) from the image. */
export async function readImageFile(
  dev: BlockDevice,
  facts: ImageFacts,
  file: { fs: number; path: string },
  max: number,
): Promise<Buffer> {
  const where = facts.filesystems[file.fs];
  const p =
    where.partition === null
      ? null
      : facts.table.partitions.find((x) => x.number === where.partition);
  const fs = await Ext4.open(dev, p?.offset ?? 0, p?.size ?? dev.size);
  const node = fs && (await fs.lookup(file.path));
  if (!fs || !node) throw new Error(`${file.path} is gone from the image`);
  return fs.read(node, max);
}

/** A kernel or an initrd copied out of an image at most (the ext4 reader's bound). */
export const MAX_BOOT_FILE = 512 * 1024 * 1024;
/** Initrds a boot may name, and the bytes of all its files together. */
export const MAX_INITRDS = 8;
export const MAX_BOOT_BYTES = 1024 * 1024 * 1024;

/** Copies the boot's kernel and initrds into `dir` (as kernel, initrd-0, …); their paths. */
export async function copyImageBoot(
  dev: BlockDevice,
  facts: ImageFacts & { boot: ImageBoot },
  dir: string,
): Promise<{ kernel: string; initrds: string[] }> {
  const copy = async (file: { fs: number; path: string }, name: string): Promise<string> => {
    const out = join(dir, name);
    await writeFile(out, await readImageFile(dev, facts, file, MAX_BOOT_FILE));
    return out;
  };
  const { kernel: k, initrds: list } = facts.boot;
  if (list.length > MAX_INITRDS)
    throw new Error(`the image's boot names ${list.length} initrds (at most ${MAX_INITRDS})`);
  const total = [k, ...list].reduce((n, f) => n + f.size, 0);
  if (total > MAX_BOOT_BYTES)
    throw new Error(
      `the image's kernel and initrds are ${total} bytes (at most ${MAX_BOOT_BYTES})`,
    );
  const kernel = await copy(facts.boot.kernel, "kernel");
  const initrds: string[] = [];
  for (const [i, f] of facts.boot.initrds.entries()) initrds.push(await copy(f, `initrd-${i}`));
  return { kernel, initrds };
}
