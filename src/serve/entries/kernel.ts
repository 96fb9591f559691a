// A kernel with initrds and a command line, from local files or URLs (fetched once, cached,
// hash-checked when a sha256 is given).
import { fileRef, initrds } from "../config/checker.ts";
import type { FileRef } from "../config/types.ts";
import { code, html } from "../ui/html.ts";
import type { Html } from "../ui/html.ts";
import { kernelPlan } from "./kind.ts";
import type { EntryBase, EntryKind, FileContext, EntryFile } from "./kind.ts";

export type KernelEntry = EntryBase & {
  kind: "kernel";
  kernel: FileRef;
  initrd: FileRef[];
  cmdline: string;
};

export const fileText = (ref: { path?: string; url?: string }): string => ref.url ?? ref.path ?? "";

/** The kernel and initrds of an entry, with its command line, for the catalog. */
export function kernelWhat(e: { kernel: FileRef; initrd: FileRef[]; cmdline?: string }): Html {
  return html`<div>kernel ${code(fileText(e.kernel))}</div>
    ${e.initrd.map((r) => html`<div>initrd ${code(fileText(r))}</div>`)}${
      e.cmdline ? html`<div>cmdline ${code(e.cmdline)}</div>` : ""
    }`;
}

/** A configured kernel or initrd as a local file to send. */
export async function configuredFile(
  refs: { kernel: FileRef; initrd: FileRef[] },
  initrd: number,
  ctx: FileContext,
): Promise<EntryFile | null> {
  const ref = initrd < 0 ? refs.kernel : refs.initrd[initrd];
  if (!ref) return null;
  const { path, etag } = await ctx.local(ref);
  return { path, etag, label: fileText(ref) };
}

export const kernelKind: EntryKind<KernelEntry> = {
  kind: "kernel",
  keys: ["kernel", "initrd", "cmdline"],
  parse(c, o, base, { path, baseDir, host }) {
    const kernel = fileRef(c, o.kernel, [...path, "kernel"], baseDir, host);
    const initrd = initrds(c, o.initrd, [...path, "initrd"], baseDir, host);
    const cmdline = c.text(o.cmdline, [...path, "cmdline"]) ?? "";
    return kernel ? { ...base, kind: "kernel", kernel, initrd, cmdline } : undefined;
  },
  plan: (entry, ctx) =>
    kernelPlan(ctx, entry, { initrds: entry.initrd.length, cmdline: entry.cmdline }),
  file: (entry, initrd, ctx) => configuredFile(entry, initrd, ctx),
  describe: (e) => kernelWhat(e),
};
