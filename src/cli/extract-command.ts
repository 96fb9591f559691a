// `inetboot extract`: an image rebuilt byte-exact from its chunks, each one verified.
import type { Command } from "commander";
import { extractImage } from "../store/extract.ts";
import { openImage } from "../store/source.ts";
import { formatBytes } from "../lib/format.ts";
import { positiveInt } from "./options.ts";
import { printJson } from "./output.ts";
import { createProgressBar } from "./progress.ts";
import { addTrustOptions, STORE_TRUST_HELP, trustPolicy } from "./trust-options.ts";
import type { TrustFlags } from "./trust-options.ts";

interface ExtractFlags extends TrustFlags {
  store?: string;
  concurrency?: number;
  json?: boolean;
}

export function registerExtractCommand(program: Command): void {
  addTrustOptions(
    program
      .command("extract")
      .description("rebuild an image byte-exact, verifying every chunk")
      .argument(
        "<source>",
        "NAME, NAME@REVISION, NAME@sha256:DIGEST, a release file or URL, or a .caibx index",
      )
      .argument("<out>", "output file (sparse where the image is zero)")
      .option("--store <dir|url>", "the store to read from")
      .option("--concurrency <n>", "chunks fetched in parallel", positiveInt)
      .option("--json", "print the summary as JSON"),
    STORE_TRUST_HELP,
  ).action(async (source: string, out: string, opts: ExtractFlags) => {
    const image = await openImage(source, {
      store: opts.store,
      policy: trustPolicy(opts, { recordState: true }),
      record: true,
    });
    const bar = createProgressBar({ enabled: !opts.json, label: "extracting" });
    try {
      const s = await extractImage(image, out, {
        concurrency: opts.concurrency,
        onProgress: (p) =>
          bar.update(p.bytesDone, p.totalBytes, `fetched ${p.chunksFetched} chunks`),
      });
      bar.done();
      const release = image.release;
      if (opts.json)
        return printJson({
          source: image.label,
          out,
          release: release && {
            digest: release.digest,
            signer: release.trust.signer,
            verified: release.trust.verified,
          },
          ...s,
        });
      console.log(
        `Extracted ${image.label} to ${out}: ${formatBytes(s.totalBytes)}, ${s.chunksFetched} chunks verified (${formatBytes(s.bytesFetched)}), ${s.zeroChunks} zero chunks skipped, ${s.seconds.toFixed(2)} s`,
      );
      if (release) {
        console.log(
          release.trust.verified
            ? `  signed by ${release.trust.signer}, verified`
            : `  signature not checked (--insecure)`,
        );
      }
    } finally {
      bar.done();
      await image.close();
    }
  });
}
