// `inetboot pack`: an image cut into chunks in a local store, published as its next release.
import type { Command } from "commander";
import { mkdir, open, readFile } from "node:fs/promises";
import { parseChunkSize } from "../store/chunker.ts";
import { decodeSecretKey } from "../store/minisign.ts";
import { DEFAULT_ZSTD_LEVEL, packImage } from "../store/pack.ts";
import { isUrl } from "../store/open-store.ts";
import { formatBytes, formatRate } from "../lib/format.ts";
import { convertToRaw, imageFormat, looksLikeImageFormat } from "./image-convert.ts";
import { positiveInt } from "./options.ts";
import { printJson } from "./output.ts";
import { createProgressBar } from "./progress.ts";

interface PackFlags {
  store: string;
  name: string;
  key?: string;
  chunkSize: string;
  level: number;
  workers?: number;
  json?: boolean;
}

export function registerPackCommand(program: Command): void {
  program
    .command("pack")
    .description(
      "cut an image (raw disk, ISO, any file; qcow2, VMDK, VHDX and other qemu-img formats as the disk they hold) into chunks in a store and publish a release",
    )
    .argument("<image>", "the file to pack")
    .requiredOption("--store <dir>", "store directory (created if missing)")
    .requiredOption("--name <name>", "image name; each pack makes its next revision")
    .option("--key <key>", "sign the release with this secret key (from inetboot keygen)")
    .option("--chunk-size <min:avg:max>", "content-defined chunk sizes", "16K:64K:256K")
    .option("--level <n>", "zstd compression level (1-19)", positiveInt, DEFAULT_ZSTD_LEVEL)
    .option(
      "--workers <n>",
      "threads that hash, compress and store chunks, the main thread included (default: one per core)",
      positiveInt,
    )
    .option("--json", "print the summary as JSON")
    .action(async (image: string, opts: PackFlags) => {
      if (isUrl(opts.store))
        throw new Error(
          "pack writes to a local directory; publish it with any web server afterwards",
        );
      const chunker = parseChunkSize(opts.chunkSize);
      const key = opts.key
        ? decodeSecretKey(await readFile(opts.key, "utf8"), opts.key)
        : undefined;
      // qcow2, VMDK, VHDX…: packed as the raw disk they describe (qemu-img makes it).
      const format = await imageFormat(image);
      if (format === null) {
        const fd = await open(image, "r");
        const head = Buffer.alloc(8);
        await fd.read(head, 0, 8, 0).finally(() => fd.close());
        const kind = looksLikeImageFormat(head);
        if (kind) {
          throw new Error(
            `${image} is a ${kind} image: install qemu-utils (qemu-img) to pack the disk it holds`,
          );
        }
      }
      if (format && format.format !== "raw") await mkdir(opts.store, { recursive: true });
      const converted =
        format && format.format !== "raw"
          ? await convertToRaw(image, format, opts.store, !opts.json)
          : null;
      const bar = createProgressBar({ enabled: !opts.json, label: "packing" });
      let s;
      try {
        s = await packImage(converted?.raw ?? image, {
          store: opts.store,
          name: opts.name,
          key,
          chunker,
          level: opts.level,
          workers: opts.workers,
          onProgress: (p) =>
            bar.update(
              p.bytesRead,
              p.totalBytes,
              `chunks ${p.chunks} new ${p.newChunks} reused ${p.reusedChunks} zero ${p.zeroChunks}`,
            ),
        });
      } finally {
        await converted?.remove();
      }
      bar.done();
      const from = converted ? { convertedFrom: format?.format } : {};
      const peakRssBytes = process.resourceUsage().maxRSS * 1024;
      if (opts.json) return printJson({ ...s, ...from, peakRssBytes });
      console.log(
        [
          `Packed ${image}${converted ? ` (${format?.format}, as the raw disk it holds)` : ""} as ${s.name} revision ${s.revision}${s.signed ? " (signed)" : " (unsigned: pass --key to sign)"}`,
          `  size        ${formatBytes(s.size)} in ${s.chunks} chunks (${s.uniqueChunks} unique, ${s.zeroChunks} all-zero)`,
          `  new         ${s.newChunks} chunks, ${formatBytes(s.storedBytes)} stored; ${s.reusedChunks} reused`,
          `  dedup ratio ${Number.isFinite(s.dedupRatio) ? s.dedupRatio.toFixed(2) : "all reused"} (image bytes per stored byte)`,
          `  time        ${s.seconds.toFixed(2)} s, ${formatRate(s.size, s.seconds)}, peak memory ${formatBytes(peakRssBytes)}`,
          `  release     ${s.releasePath} sha256:${s.releaseDigest}`,
        ].join("\n"),
      );
    });
}
