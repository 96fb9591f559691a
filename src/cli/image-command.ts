// `inetboot image inspect`: what a disk image holds, read lazily (a store's release, a raw file
// or URL by Range): its partition table, each partition's place, type, PARTUUID and name, the
// ext4 filesystems in them and the kernels, initrds and command line found there.
import type { Command } from "commander";
import { openDeviceStack } from "../block/open-stack.ts";
import type { BlockDevice } from "../block/block-device.ts";
import { findBootFiles } from "../disk/boot-files.ts";
import type { BootFiles } from "../disk/boot-files.ts";
import { Ext4 } from "../disk/ext4.ts";
import { readPartitions } from "../disk/partitions.ts";
import type { Partition, PartitionTable } from "../disk/partitions.ts";
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

interface Filesystem {
  type: "ext4";
  label: string;
  uuid: string;
  boot: BootFiles | null;
}

/** The filesystem in [offset, offset+size) when this reader knows it, with its boot files. */
async function filesystemAt(dev: BlockDevice, offset: number, size: number): Promise<Found> {
  try {
    const fs = await Ext4.open(dev, offset, size);
    if (!fs) return null;
    return {
      type: "ext4",
      label: fs.info.label,
      uuid: fs.info.uuid,
      boot: await findBootFiles(fs),
    };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** Text from the image, safe for a terminal: control characters shown escaped. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
const shown = (text: string): string =>
  text.replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

function filesystemLines(fs: Found): string[] {
  if (!fs) return [];
  if ("error" in fs) return [`         filesystem unreadable: ${shown(fs.error)}`];
  const lines = [`         ext4${fs.label ? ` "${shown(fs.label)}"` : ""} UUID=${fs.uuid}`];
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

type Found = Filesystem | { error: string } | null;

type Inspected = Omit<PartitionTable, "partitions"> & {
  partitions: (Partition & { filesystem: Found })[];
  /** A filesystem on the whole image (no partition table). */
  filesystem?: Found;
};

async function inspect(dev: BlockDevice): Promise<Inspected> {
  const table = await readPartitions(dev);
  const partitions = [];
  for (const p of table.partitions) {
    partitions.push({ ...p, filesystem: await filesystemAt(dev, p.offset, p.size) });
  }
  const whole = table.scheme === "none" ? { filesystem: await filesystemAt(dev, 0, dev.size) } : {};
  return { ...table, partitions, ...whole };
}

function describe(label: string, size: number, t: Inspected): string[] {
  const scheme = t.scheme === "none" ? "no partition table" : t.scheme.toUpperCase();
  return [
    `${label}: ${formatBytes(size)}, ${scheme}${t.diskId ? ` (disk ${t.diskId})` : ""}`,
    ...filesystemLines(t.filesystem ?? null),
    ...t.partitions.flatMap((p) => [partitionLine(p), ...filesystemLines(p.filesystem)]),
    ...t.warnings.map((w) => `  warning: ${w}`),
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
      const table = await inspect(stack.device);
      if (opts.json) {
        console.log(
          JSON.stringify({ source: stack.label, size: stack.device.size, ...table }, null, 2),
        );
      } else {
        console.log(describe(stack.label, stack.device.size, table).join("\n"));
      }
    } finally {
      await stack.close();
    }
  });
}
