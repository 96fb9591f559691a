// `inetboot image inspect`: what a disk image holds, read lazily (a store's release, a raw file
// or URL by Range): its partition table, each partition's place, type, PARTUUID and name.
import type { Command } from "commander";
import { openDeviceStack } from "../block/open-stack.ts";
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

function partitionLine(p: Partition): string {
  const what = p.typeName ?? p.type;
  const name = p.name ? ` ${JSON.stringify(p.name)}` : "";
  return `  ${String(p.number).padStart(3)}  ${what.padEnd(22)} at ${formatBytes(p.offset).padEnd(10)} ${formatBytes(p.size).padEnd(10)} PARTUUID=${p.partUuid}${p.bootable ? " (bootable)" : ""}${name}`;
}

function describe(label: string, size: number, t: PartitionTable): string[] {
  const scheme =
    t.scheme === "none" ? "no partition table (a bare filesystem?)" : t.scheme.toUpperCase();
  return [
    `${label}: ${formatBytes(size)}, ${scheme}${t.diskId ? ` (disk ${t.diskId})` : ""}`,
    ...t.partitions.map(partitionLine),
    ...t.warnings.map((w) => `  warning: ${w}`),
  ];
}

export function registerImageCommands(program: Command): void {
  const image = program.command("image").description("disk images");
  const inspect = image
    .command("inspect")
    .description("show a disk image's partition table, read lazily (only the sectors it needs)")
    .argument("<source>", "NAME[@REV] from --store, a raw image file, or an http(s) URL")
    .option("--store <dir|url>", "store to read from; repeat for mirrors", collect, [])
    .option("--cache <dir>", "keep verified chunks here")
    .option("--offline", "use only the cache, never the network")
    .option("--json", "print the result as JSON");
  addTrustOptions(inspect, ATTACH_TRUST_HELP).action(async (source: string, opts: InspectFlags) => {
    const stack = await openDeviceStack(source, {
      stores: opts.store,
      cache: opts.cache,
      offline: opts.offline,
      policy: trustPolicy(opts, { recordState: false }),
    });
    try {
      const table = await readPartitions(stack.device);
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
