// `inetboot image inspect`: what a disk image holds, read lazily (a store's release, a raw file
// or URL by Range): its partition table, each partition's place, type, PARTUUID and name, the
// filesystems in them with their kernels and initrds, and what inetboot boots of it: the default
// kernel, initrd and command line, the root partition, and whether the initrd mounts an NBD root.
import type { Command } from "commander";
import { openDeviceStack } from "../block/open-stack.ts";
import type { BlockDevice } from "../block/block-device.ts";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { scanInitrd } from "../boot/initrd-scan.ts";
import type { InitrdFacts } from "../boot/initrd-scan.ts";
import { findImageBoot, MAX_BOOT_FILE, readImageFile } from "../disk/image-boot.ts";
import type { ImageFacts, ImageFilesystem } from "../disk/image-boot.ts";
import type { Partition } from "../disk/partitions.ts";
import { formatBytes } from "../lib/format.ts";
import { collect } from "./options.ts";
import { addTrustOptions, ATTACH_TRUST_HELP, trustPolicy } from "./trust-options.ts";
import type { TrustFlags } from "./trust-options.ts";

interface InspectFlags extends TrustFlags {
  store: string[];
  cache?: string;
  offline?: boolean;
  json?: boolean;
}

/** Text from the image, safe for a terminal: control characters shown escaped. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
const shown = (text: string): string =>
  text.replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

function filesystemLines(fs: ImageFilesystem | undefined): string[] {
  if (!fs) return [];
  if (fs.unread) return [`         ${fs.type}: ${shown(fs.unread)}`];
  const lines = [`         ${fs.type}${fs.label ? ` "${shown(fs.label)}"` : ""} UUID=${fs.uuid}`];
  const b = fs.boot;
  if (b) {
    const mark = (p: string, d?: string): string => shown(p === d ? `${p} (default)` : p);
    lines.push(`         kernels  ${b.kernels.map((k) => mark(k, b.defaultKernel)).join(", ")}`);
    if (b.initrds.length)
      lines.push(`         initrds  ${b.initrds.map((k) => mark(k, b.defaultInitrd)).join(", ")}`);
    if (b.cmdline) lines.push(`         cmdline  ${shown(b.cmdline)} (/etc/kernel/cmdline)`);
  }
  return lines;
}

function partitionLine(p: Partition): string {
  const what = p.typeName ?? p.type;
  const name = p.name ? ` "${shown(p.name)}"` : "";
  return `  ${String(p.number).padStart(3)}  ${what.padEnd(22)} at ${formatBytes(p.offset).padEnd(10)} ${formatBytes(p.size).padEnd(10)} PARTUUID=${p.partUuid}${p.bootable ? " (bootable)" : ""}${name}`;
}

/** What inetboot boots of the image, with what its initrd can do. */
interface BootSummary {
  kernel: string;
  initrds: string[];
  cmdline: string;
  from: string;
  root: string;
  nbdRoot: string;
  initrd?: InitrdFacts | { error: string };
  /** How a server boots it: the initrd's own nbd-client, or inetboot's overlay. */
  nbd: string;
}

async function bootSummary(dev: BlockDevice, facts: ImageFacts): Promise<BootSummary | null> {
  const boot = facts.boot;
  if (!boot) return null;
  let initrd: BootSummary["initrd"];
  if (boot.initrds[0]) {
    const dir = await mkdtemp(join(tmpdir(), "inetboot-initrd-"));
    try {
      const path = join(dir, "initrd");
      await writeFile(path, await readImageFile(dev, facts, boot.initrds[0], MAX_BOOT_FILE));
      initrd = await scanInitrd(path).catch((err: Error) => ({ error: err.message }));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  const nbd = !initrd
    ? "no initrd: the kernel cannot attach an NBD root by itself"
    : "error" in initrd
      ? `the initrd could not be read (${initrd.error})`
      : initrd.nbdClient
        ? `its initrd's own nbd-client (/${initrd.nbdClient}): nbdroot=`
        : initrd.builder === "initramfs-tools"
          ? "no nbd-client in its initramfs-tools initrd: inetboot adds its NBD overlay"
          : `no nbd-client in its ${initrd.builder} initrd: give the entry kernel: and initrd: with NBD support`;
  return {
    kernel: boot.kernel.path,
    initrds: boot.initrds.map((f) => f.path),
    cmdline: boot.cmdline,
    from: boot.from,
    root: boot.rootSpec ?? "(found by its /etc/fstab)",
    nbdRoot: boot.nbdRoot,
    initrd,
    nbd,
  };
}

function bootLines(b: BootSummary | null, problems: string[]): string[] {
  const lines = b
    ? [
        `boots    ${shown(b.kernel)} (${shown(b.from)})`,
        ...b.initrds.map((p) => `initrd   ${shown(p)}`),
        `cmdline  ${shown(b.cmdline)}`,
        `root     ${shown(b.root)}, on the machine's NBD disk ${b.nbdRoot}`,
        `nbd      ${shown(b.nbd)}`,
      ]
    : [];
  return [...lines, ...problems.map((p) => `note     ${shown(p)}`)];
}

function describe(label: string, size: number, f: ImageFacts, boot: BootSummary | null): string[] {
  const t = f.table;
  const scheme = t.scheme === "none" ? "no partition table" : t.scheme.toUpperCase();
  const fsOf = (n: number | null): ImageFilesystem | undefined =>
    f.filesystems.find((x) => x.partition === n);
  return [
    `${label}: ${formatBytes(size)}, ${scheme}${t.diskId ? ` (disk ${t.diskId})` : ""}`,
    ...filesystemLines(fsOf(null)),
    ...t.partitions.flatMap((p) => [partitionLine(p), ...filesystemLines(fsOf(p.number))]),
    ...t.warnings.map((w) => `  warning: ${w}`),
    ...bootLines(boot, f.problems),
  ];
}

export function registerImageCommands(program: Command): void {
  const image = program.command("image").description("disk images");
  const command = image
    .command("inspect")
    .description(
      "show a disk image's partitions, their ext4 filesystems and the kernels, initrds and command line in them, read lazily (only the blocks it needs)",
    )
    .argument("<source>", "NAME[@REV] from --store, a raw image file, or an http(s) URL")
    .option("--store <dir|url>", "store to read from; repeat for mirrors", collect, [])
    .option("--cache <dir>", "keep verified chunks here")
    .option("--offline", "use only the cache, never the network")
    .option("--json", "print the result as JSON");
  addTrustOptions(command, ATTACH_TRUST_HELP).action(async (source: string, opts: InspectFlags) => {
    const stack = await openDeviceStack(source, {
      stores: opts.store,
      cache: opts.cache,
      offline: opts.offline,
      policy: trustPolicy(opts, { recordState: false }),
    });
    try {
      const facts = await findImageBoot(stack.device);
      const boot = await bootSummary(stack.device, facts);
      if (opts.json) {
        const { table, filesystems, problems } = facts;
        console.log(
          JSON.stringify(
            { source: stack.label, size: stack.device.size, ...table, filesystems, boot, problems },
            null,
            2,
          ),
        );
      } else {
        console.log(describe(stack.label, stack.device.size, facts, boot).join("\n"));
      }
    } finally {
      await stack.close();
    }
  });
}
