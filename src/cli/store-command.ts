// The store's own commands: `inetboot verify`, `ls`, `diff` (what moving between two releases
// fetches) and `gc`.
import type { Command } from "commander";
import { diffImages, listStore } from "../store/list.ts";
import { applyGc, DEFAULT_GC_GRACE_SECONDS, planGc } from "../store/gc.ts";
import { openImage } from "../store/source.ts";
import { isUrl, openStore } from "../store/open-store.ts";
import { verifyStore } from "../store/verify.ts";
import { formatBytes, formatTable } from "../lib/format.ts";
import { positiveInt } from "./options.ts";
import { printJson, ReportedFailure } from "./output.ts";
import { createProgressBar } from "./progress.ts";
import { addTrustOptions, STORE_TRUST_HELP, trustPolicy } from "./trust-options.ts";
import type { TrustFlags } from "./trust-options.ts";

interface GcFlags {
  store: string;
  keep?: number;
  grace: number;
  yes?: boolean;
  json?: boolean;
}

/** Registers verify, ls, diff and gc, in that order (the order of `inetboot --help`). */
export function registerStoreCommands(program: Command): void {
  registerVerify(program);
  registerLs(program);
  registerDiff(program);
  registerGc(program);
}

function registerVerify(program: Command): void {
  addTrustOptions(
    program
      .command("verify")
      .description(
        "check that every chunk every release references is present and intact, and every boot pack and profile",
      )
      .argument("[name]", "only this image")
      .requiredOption("--store <dir|url>", "the store to check")
      .option("--json", "print the report as JSON"),
    STORE_TRUST_HELP,
  ).action(
    async (name: string | undefined, opts: TrustFlags & { store: string; json?: boolean }) => {
      const reader = openStore(opts.store);
      const bar = createProgressBar({ enabled: !opts.json, label: "verifying" });
      try {
        const policy = trustPolicy(opts, { recordState: false, insecureWithoutTrust: true });
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
          for (const p of report.packs) {
            const what = `${p.name}@${p.revision}: boot pack and profile`;
            if (p.problems.length === 0) console.log(`${what} OK (${p.entries} entries)`);
            for (const problem of p.problems) console.log(`BAD PACK ${what}: ${problem}`);
          }
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
}

function registerLs(program: Command): void {
  addTrustOptions(
    program
      .command("ls")
      .description("list images and releases with sizes, signer and bytes shared between revisions")
      .requiredOption("--store <dir|url>", "the store to list")
      .option("--json", "print the list as JSON"),
    STORE_TRUST_HELP,
  ).action(async (opts: TrustFlags & { store: string; json?: boolean }) => {
    const reader = openStore(opts.store);
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
}

function registerDiff(program: Command): void {
  addTrustOptions(
    program
      .command("diff")
      .description("how many chunks and bytes a machine that has A must fetch to get B")
      .argument("<a>", "the release the machine has (NAME@REVISION, ...)")
      .argument("<b>", "the release it moves to")
      .option("--store <dir|url>", "the store of both releases")
      .option("--json", "print the report as JSON"),
    STORE_TRUST_HELP,
  ).action(async (a: string, b: string, opts: TrustFlags & { store?: string; json?: boolean }) => {
    const policy = trustPolicy(opts, { recordState: false, insecureWithoutTrust: true });
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
}

function registerGc(program: Command): void {
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
    .action(async (opts: GcFlags) => {
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
    });
}
