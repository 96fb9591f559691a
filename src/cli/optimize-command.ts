// `inetboot optimize`: a boot profile and a boot pack (the chunks and pieces of chunks a boot
// reads, in access order) published with an image's latest release as its next signed revision.
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { decodeSecretKey } from "../store/minisign.ts";
import { optimizeRelease } from "../store/optimize.ts";
import { isUrl } from "../store/open-store.ts";
import { formatBytes } from "../lib/format.ts";

export function registerOptimizeCommand(program: Command): void {
  program
    .command("optimize")
    .description(
      "publish a boot profile and a boot pack (what the boot reads, in access order) with an image's latest release, as the next signed revision",
    )
    .argument("<name>", "image name in the store")
    .requiredOption(
      "--profile <file>",
      "boot profile (from inetboot profile record, or /api/images/ENTRY/profile)",
    )
    .requiredOption("--store <dir>", "the store directory")
    .option("--key <key>", "sign the release with this secret key")
    .option(
      "--whole-chunks",
      "pack whole chunks only, not the pieces of them the boot reads (for clients older than pieces)",
    )
    .option("--json", "print the summary as JSON")
    .action(
      async (
        name: string,
        opts: {
          profile: string;
          store: string;
          key?: string;
          wholeChunks?: boolean;
          json?: boolean;
        },
      ) => {
        if (isUrl(opts.store)) throw new Error("optimize writes to a local store directory");
        const key = opts.key
          ? decodeSecretKey(await readFile(opts.key, "utf8"), opts.key)
          : undefined;
        const r = await optimizeRelease({
          store: opts.store,
          name,
          profile: opts.profile,
          key,
          wholeChunks: opts.wholeChunks,
        });
        if (opts.json) {
          console.log(JSON.stringify(r, null, 2));
          return;
        }
        console.log(
          [
            `Published ${name} revision ${r.revision} (same disk as revision ${r.baseRevision})${r.signed ? " (signed)" : " (unsigned: pass --key to sign)"}`,
            `  profile    ${r.profileRegions} regions, ${formatBytes(r.profileBytes)} read at boot`,
            `  boot pack  ${r.packWholeChunks} whole chunks and ${r.packPieces} pieces, ${formatBytes(r.pack.size)} (${formatBytes(r.packChunkBytes)} uncompressed); occupancy if the boot repeats: ${((r.profileDataBytes / Math.max(1, r.packChunkBytes)) * 100).toFixed(0)}%`,
            `  release    ${r.releasePath}`,
          ].join("\n"),
        );
      },
    );
}
