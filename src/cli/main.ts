// The inetboot command line: the only place that reads argv, prints, and sets exit codes.
import { Command } from "commander";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { parseChunkSize } from "../store/chunker.ts";
import { diffImages } from "../store/list.ts";
import { extractImage } from "../store/extract.ts";
import { applyGc, DEFAULT_GC_GRACE_SECONDS, planGc } from "../store/gc.ts";
import { listStore } from "../store/list.ts";
import {
  decodeSecretKey,
  encodePublicKey,
  encodeSecretKey,
  formatKeyId,
  generateKeyPair,
} from "../store/minisign.ts";
import { DEFAULT_ZSTD_LEVEL, packImage } from "../store/pack.ts";
import { openImage } from "../store/source.ts";
import { isUrl, openStoreReader } from "../store/store-reader.ts";
import { defaultStatePath, loadTrustedKeys } from "../store/trust.ts";
import type { TrustPolicy } from "../store/trust.ts";
import { verifyStore } from "../store/verify.ts";
import { registerAttachCommands } from "./attach-command.ts";
import { registerIsoCommands } from "./iso-command.ts";
import { registerProfileCommands } from "./profile-command.ts";
import { registerRunCommand } from "./run-command.ts";
import { registerServeCommand } from "./serve-command.ts";
import { formatBytes, formatRate, formatTable } from "../lib/format.ts";
import { collect, positiveInt } from "./options.ts";
import { createProgressBar } from "./progress.ts";

/** Raised for a failed check whose report was already printed: exit 1 without another message. */
class ReportedFailure extends Error {}

interface TrustFlags {
  trust: string[];
  insecure?: boolean;
  state?: string;
}

function trustPolicy(flags: TrustFlags, options: { recordState: boolean }): TrustPolicy {
  return {
    trusted: loadTrustedKeys(flags.trust),
    insecure: flags.insecure ?? false,
    statePath: options.recordState ? (flags.state ?? defaultStatePath()) : null,
  };
}

function addTrustOptions(cmd: Command): Command {
  return cmd
    .option(
      "--trust <pubkey>",
      "trust releases signed by this minisign public key (file or base64; repeatable)",
      collect,
      [],
    )
    .option(
      "--insecure",
      "accept unsigned releases and bare .caibx indexes, and signed releases when no --trust key is given",
    )
    .option("--state <file>", `anti-rollback state file (default ${defaultStatePath()})`);
}

function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("inetboot")
    .description("Network boot from lazily fetched, signed, content-addressed disk images")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (str, write) => write(str) });

  program
    .command("keygen")
    .description("create an Ed25519 signing key (minisign-compatible public key in KEY.pub)")
    .requiredOption(
      "--out <key>",
      "where to write the secret key (mode 0600); the public key goes to KEY.pub",
    )
    .option("--force", "overwrite existing key files")
    .option("--json", "print the result as JSON")
    .action(async (opts: { out: string; force?: boolean; json?: boolean }) => {
      const sk = generateKeyPair();
      const flag = opts.force ? "w" : "wx";
      await writeFile(opts.out, encodeSecretKey(sk), { mode: 0o600, flag }).catch(
        (err: NodeJS.ErrnoException) => {
          throw new Error(
            err.code === "EEXIST"
              ? `${opts.out} already exists; pass --force to replace it`
              : `Cannot write ${opts.out}: ${err.message}`,
          );
        },
      );
      await chmod(opts.out, 0o600);
      const pub = encodePublicKey(sk);
      await writeFile(`${opts.out}.pub`, pub, { flag });
      const keyId = formatKeyId(sk.keyId);
      if (opts.json)
        printJson({
          keyId,
          secretKey: opts.out,
          publicKey: `${opts.out}.pub`,
          public: pub.split("\n")[1],
        });
      else {
        console.log(pub.split("\n")[1]);
        console.error(
          `Wrote secret key ${opts.out} (keep it private) and public key ${opts.out}.pub (key id ${keyId}).`,
        );
        console.error(
          `Check a release with: minisign -V -p ${opts.out}.pub -m releases/NAME/REV.json`,
        );
      }
    });

  program
    .command("pack")
    .description(
      "cut an image (raw disk, ISO, any file) into chunks in a store and publish a release",
    )
    .argument("<image>", "the file to pack")
    .requiredOption("--store <dir>", "store directory (created if missing)")
    .requiredOption("--name <name>", "image name; each pack makes its next revision")
    .option("--key <key>", "sign the release with this secret key (from inetboot keygen)")
    .option("--chunk-size <min:avg:max>", "content-defined chunk sizes", "16K:64K:256K")
    .option("--level <n>", "zstd compression level (1-19)", positiveInt, DEFAULT_ZSTD_LEVEL)
    .option("--workers <n>", "worker threads (default: one per core)", positiveInt)
    .option("--json", "print the summary as JSON")
    .action(
      async (
        image: string,
        opts: {
          store: string;
          name: string;
          key?: string;
          chunkSize: string;
          level: number;
          workers?: number;
          json?: boolean;
        },
      ) => {
        if (isUrl(opts.store))
          throw new Error(
            "pack writes to a local directory; publish it with any web server afterwards",
          );
        const chunker = parseChunkSize(opts.chunkSize);
        const key = opts.key
          ? decodeSecretKey(await readFile(opts.key, "utf8"), opts.key)
          : undefined;
        const bar = createProgressBar({ enabled: !opts.json, label: "packing" });
        const s = await packImage(image, {
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
        bar.done();
        const peakRssBytes = process.resourceUsage().maxRSS * 1024;
        if (opts.json) return printJson({ ...s, peakRssBytes });
        console.log(
          [
            `Packed ${image} as ${s.name} revision ${s.revision}${s.signed ? " (signed)" : " (unsigned: pass --key to sign)"}`,
            `  size        ${formatBytes(s.size)} in ${s.chunks} chunks (${s.uniqueChunks} unique, ${s.zeroChunks} all-zero)`,
            `  new         ${s.newChunks} chunks, ${formatBytes(s.storedBytes)} stored; ${s.reusedChunks} reused`,
            `  dedup ratio ${Number.isFinite(s.dedupRatio) ? s.dedupRatio.toFixed(2) : "all reused"} (image bytes per stored byte)`,
            `  time        ${s.seconds.toFixed(2)} s, ${formatRate(s.size, s.seconds)}, peak memory ${formatBytes(peakRssBytes)}`,
            `  release     ${s.releasePath} sha256:${s.releaseDigest}`,
          ].join("\n"),
        );
      },
    );

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
  ).action(
    async (
      source: string,
      out: string,
      opts: TrustFlags & { store?: string; concurrency?: number; json?: boolean },
    ) => {
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
    },
  );

  addTrustOptions(
    program
      .command("verify")
      .description("check that every chunk every release references is present and intact")
      .argument("[name]", "only this image")
      .requiredOption("--store <dir|url>", "the store to check")
      .option("--json", "print the report as JSON"),
  ).action(
    async (name: string | undefined, opts: TrustFlags & { store: string; json?: boolean }) => {
      const reader = openStoreReader(opts.store);
      const bar = createProgressBar({ enabled: !opts.json, label: "verifying" });
      try {
        const policy = {
          ...trustPolicy(opts, { recordState: false }),
          insecure: opts.insecure || opts.trust.length === 0,
        };
        const report = await verifyStore(reader, {
          name,
          policy,
          onProgress: (d, t) => bar.update(d, t, `${d}/${t} chunks`),
        });
        bar.done();
        if (opts.json) printJson(report);
        else {
          for (const r of report.releases) {
            const sig = r.verified
              ? `signed by ${r.signer}, verified`
              : r.signer
                ? `signed by ${r.signer}, not checked`
                : "unsigned";
            console.log(`${r.name}@${r.revision}: ${r.problem ?? sig}`);
          }
          for (const m of report.missing) console.log(`MISSING ${m.id} ${m.where}`);
          for (const c of report.corrupt) console.log(`CORRUPT ${c.id} ${c.where}`);
          console.log(
            `${report.chunksChecked} chunks checked: ${report.missing.length} missing, ${report.corrupt.length} corrupt — ${report.ok ? "OK" : "FAILED"}`,
          );
        }
        if (!report.ok) throw new ReportedFailure();
      } finally {
        await reader.close();
      }
    },
  );

  addTrustOptions(
    program
      .command("ls")
      .description("list images and releases with sizes, signer and bytes shared between revisions")
      .requiredOption("--store <dir|url>", "the store to list")
      .option("--json", "print the list as JSON"),
  ).action(async (opts: TrustFlags & { store: string; json?: boolean }) => {
    const reader = openStoreReader(opts.store);
    try {
      const rows = await listStore(reader, { policy: trustPolicy(opts, { recordState: false }) });
      if (opts.json) return printJson(rows);
      if (rows.length === 0)
        return console.log(
          `No images in ${opts.store}. Add one with: inetboot pack IMAGE --store DIR --name NAME`,
        );
      console.log(
        formatTable(
          ["IMAGE", "REV", "SIZE", "CHUNKS", "SIGNER", "SHARED WITH PREV", "CREATED"],
          rows.map((r) => [
            r.name,
            String(r.revision),
            r.size === null ? "?" : formatBytes(r.size),
            r.chunks === null ? "?" : String(r.chunks),
            r.problem
              ? `ERROR: ${r.problem}`
              : r.signer
                ? `${r.signer}${r.verified ? " (verified)" : ""}`
                : "unsigned",
            r.sharedWithPrevious === null || !r.size
              ? "-"
              : `${formatBytes(r.sharedWithPrevious)} (${((100 * r.sharedWithPrevious) / r.size).toFixed(0)}%)`,
            r.created ?? "?",
          ]),
        ),
      );
    } finally {
      await reader.close();
    }
  });

  addTrustOptions(
    program
      .command("diff")
      .description("how many chunks and bytes a machine that has A must fetch to get B")
      .argument("<a>", "the release the machine has (NAME@REVISION, ...)")
      .argument("<b>", "the release it moves to")
      .option("--store <dir|url>", "the store of both releases")
      .option("--json", "print the report as JSON"),
  ).action(async (a: string, b: string, opts: TrustFlags & { store?: string; json?: boolean }) => {
    const policy = {
      ...trustPolicy(opts, { recordState: false }),
      insecure: opts.insecure || opts.trust.length === 0,
    };
    // A bare index is read only with an explicit --insecure, never because no --trust was given.
    const open = { store: opts.store, policy, allowUnsigned: opts.insecure === true };
    const imageA = await openImage(a, open);
    try {
      const imageB = await openImage(b, open);
      try {
        const d = await diffImages(imageA.index, imageB.index, imageB.chunks);
        if (opts.json) return printJson({ a: imageA.label, b: imageB.label, ...d });
        const wire =
          d.fetchStoredBytes === null
            ? ""
            : ` (${formatBytes(d.fetchStoredBytes)} compressed on the wire)`;
        console.log(
          `${imageA.label} -> ${imageB.label}: fetch ${d.fetchChunks} of ${d.totalChunks} chunks, ${formatBytes(d.fetchBytes)} of ${formatBytes(d.totalBytes)}${wire}`,
        );
      } finally {
        await imageB.close();
      }
    } finally {
      await imageA.close();
    }
  });

  program
    .command("gc")
    .description(
      "remove releases beyond --keep and chunks and indexes no kept release uses (dry run unless --yes)",
    )
    .requiredOption("--store <dir>", "store directory")
    .option("--keep <n>", "keep the newest N releases of each image (default: all)", positiveInt)
    .option(
      "--grace <seconds>",
      "keep unreferenced chunks touched this recently (a pack may be using them)",
      (v) => Number(v),
      DEFAULT_GC_GRACE_SECONDS,
    )
    .option("--yes", "really delete")
    .option("--json", "print the plan as JSON")
    .action(
      async (opts: {
        store: string;
        keep?: number;
        grace: number;
        yes?: boolean;
        json?: boolean;
      }) => {
        if (isUrl(opts.store)) throw new Error("gc works on a local store directory");
        const plan = await planGc(opts.store, { keep: opts.keep, graceSeconds: opts.grace });
        if (opts.yes) await applyGc(opts.store, plan);
        if (opts.json) return printJson({ ...plan, deleted: opts.yes === true });
        const verb = opts.yes ? "Removed" : "Would remove";
        console.log(
          `${verb} ${plan.releases.length} releases, ${plan.indexes.length} indexes, ${plan.packs.length} boot packs/profiles, ${plan.chunks.length} chunks and ${plan.tempFiles.length} stale temporary files: ${formatBytes(plan.bytes)}`,
        );
        if (plan.recentKept > 0)
          console.log(
            `Kept ${plan.recentKept} unreferenced chunks younger than ${opts.grace} s (--grace).`,
          );
        if (!opts.yes && plan.bytes + plan.releases.length > 0)
          console.log("Dry run: pass --yes to delete.");
      },
    );

  registerAttachCommands(program, (flags, record) => trustPolicy(flags, { recordState: record }));
  registerProfileCommands(program, (flags, record) => trustPolicy(flags, { recordState: record }));
  registerIsoCommands(program);
  registerRunCommand(program, (flags, record) => trustPolicy(flags, { recordState: record }));
  registerServeCommand(program);

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    if (argv.length <= 2) {
      program.outputHelp();
      return 0;
    }
    await program.parseAsync(argv);
    // A command may set process.exitCode after printing its report (a failed check).
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof ReportedFailure) return 1;
    const e = err as Error & { code?: string; exitCode?: number };
    if (typeof e.code === "string" && e.code.startsWith("commander.")) {
      return e.exitCode ?? 1;
    }
    console.error(`inetboot: ${e.message}`);
    if (process.env.INETBOOT_DEBUG) console.error(e.stack);
    return 1;
  }
}

process.exitCode = await main(process.argv);
