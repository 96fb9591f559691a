// A live ISO by URL or path: the server reads it by Range, recognises its family, boots its
// kernel and initrds with the family's command line (the ISO and its tree served at /iso/…),
// or, with no recipe but an El Torito record, sanboots the ISO itself.
import { resolve } from "node:path";
import { FAMILIES } from "../../iso/recipes.ts";
import type { Family } from "../../iso/recipes.ts";
import type { ChecksumsSpec, IsoSignatureSpec } from "../../iso/signed-checksums.ts";
import { LiveIsoError } from "../../iso/live-iso.ts";
import { hex64, keyringFiles, whereIs } from "../config/checker.ts";
import type { Checker, Path } from "../config/checker.ts";
import type { HostProbe } from "../config/host.ts";
import { HttpError } from "../http-util.ts";
import { code, html } from "../ui/html.ts";
import { bundleRunsOn } from "../../boot/nbd-client-bundle.ts";
import { kernelPlan } from "./kind.ts";
import type { EntryBase, EntryKind } from "./kind.ts";

export type IsoEntry = EntryBase & {
  kind: "iso";
  /** An http(s) URL (read by Range, cached) or a local path. */
  iso: string;
  /** Force this family's recipe instead of detecting it ("cdrom": sanboot the ISO). */
  recipe?: Family | "cdrom";
  /** Paths inside the ISO replacing the recipe's. */
  kernel?: string;
  initrd?: string[];
  /**
   * The command line over the recipe's: {recipe} stands for the recipe's own (lazy or download),
   * {iso}, {tree}, {file:PATH} expand. From `cmdline:` it is "{recipe} ARGS" unless ARGS place
   * {recipe} themselves; from `cmdline-replace:` it replaces the recipe's line as written.
   */
  cmdline?: string;
  /** The whole ISO's SHA-256: checked (once) before any machine boots it. */
  sha256?: string;
  /** Or the publisher's signed checksum list that gives it. */
  checksums?: ChecksumsSpec;
  /** Or the publisher's detached signature over the whole ISO. */
  signature?: IsoSignatureSpec;
  /** false: the family's download recipe even where the ISO can boot lazily over NBD. */
  lazy: boolean;
};

/** How long a plan request waits for an ISO being opened before it says "wait". */
const ISO_WAIT_MS = 3000;

/** `checksums: { url, signature?, keyring, name? }`: a signed list giving the ISO's SHA-256. */
function checksumsSpec(
  c: Checker,
  v: unknown,
  path: Path,
  baseDir: string,
  host: HostProbe,
): ChecksumsSpec | undefined {
  if (v === undefined) return undefined;
  const o = c.object(v, path, ["url", "signature", "keyring", "name"]);
  if (!o) return undefined;
  const url = c.string(o.url, [...path, "url"], "the checksum list's URL or path");
  const signature = c.string(o.signature, [...path, "signature"], "a string (a path or URL)");
  const keyring = keyringFiles(c, o.keyring, [...path, "keyring"], baseDir, host);
  if (url === undefined) c.error(path, "checksums needs url: the list (SHA256SUMS, CHECKSUM)");
  if (keyring.length === 0) {
    c.error(path, "checksums needs keyring: the publisher's public key file(s) that sign it");
  }
  if (url === undefined || keyring.length === 0) return undefined;
  return {
    url: whereIs(baseDir, url),
    signature: signature === undefined ? undefined : whereIs(baseDir, signature),
    keyring,
    name: c.string(o.name, [...path, "name"]),
  };
}

/** `signature: { url, keyring }`: a detached signature over the whole ISO. */
function isoSignatureSpec(
  c: Checker,
  v: unknown,
  path: Path,
  baseDir: string,
  host: HostProbe,
): IsoSignatureSpec | undefined {
  if (v === undefined) return undefined;
  const o = c.object(v, path, ["url", "keyring"]);
  if (!o) return undefined;
  const url = c.string(o.url, [...path, "url"], "the signature's URL or path (ISO.sig)");
  const keyring = keyringFiles(c, o.keyring, [...path, "keyring"], baseDir, host);
  if (url === undefined) c.error(path, "signature needs url: the ISO's detached signature (.sig)");
  if (keyring.length === 0) {
    c.error(path, "signature needs keyring: the publisher's public key file(s)");
  }
  if (url === undefined || keyring.length === 0) return undefined;
  return { url: whereIs(baseDir, url), keyring };
}

/**
 * `cmdline:` adds to the recipe's command line (that is how it reads: "cmdline: console=ttyS0"
 * replacing boot=/root= left machines in an initramfs shell), at the end unless it places
 * {recipe} itself; `cmdline-replace:` is the whole line, the recipe's dropped.
 */
function isoCmdline(c: Checker, o: Record<string, unknown>, path: Path): string | undefined {
  const add = c.text(o.cmdline, [...path, "cmdline"]);
  const replace = c.text(o["cmdline-replace"], [...path, "cmdline-replace"]);
  if (add !== undefined && replace !== undefined) {
    c.error(
      [...path, "cmdline-replace"],
      "give cmdline (added to the recipe's) or cmdline-replace, not both",
    );
  }
  if (replace !== undefined) {
    if (replace.includes("{recipe}")) {
      c.error(
        [...path, "cmdline-replace"],
        `replaces the recipe's line, so it has no {recipe}; write cmdline: "${replace}" to place the recipe's line`,
      );
    }
    return replace;
  }
  if (add === undefined) return undefined;
  if (add.includes("{recipe}")) return add;
  if (/(^|\s)(boot|root)=|\{(iso|tree|file:)/.test(add)) {
    // Written when cmdline: replaced the recipe's line: now it would be added to it.
    c.warn(
      [...path, "cmdline"],
      `is added to the recipe's command line, which has its own boot=/root= and ISO location; if "${add}" is the whole line, write cmdline-replace: instead`,
    );
  }
  return `{recipe} ${add}`;
}

export const isoKind: EntryKind<IsoEntry> = {
  kind: "iso",
  keys: [
    "iso",
    "recipe",
    "kernel",
    "initrd",
    "cmdline",
    "cmdline-replace",
    "sha256",
    "checksums",
    "signature",
    "lazy",
  ],
  parse(c, o, base, { path, baseDir, host }) {
    const checks = ["sha256", "checksums", "signature"].filter((k) => o[k] !== undefined);
    if (checks.length > 1) {
      c.error(
        [...path, checks[1]],
        `give one of sha256, checksums or signature, not ${checks.join(" and ")}`,
      );
    }
    const location = c.string(o.iso, [...path, "iso"], "an ISO's http(s) URL or file path");
    if (location === undefined) return undefined;
    const iso = /^https?:\/\//i.test(location) ? location : resolve(baseDir, location);
    if (/^[a-z]+:\/\//i.test(location) && !/^https?:/i.test(location)) {
      c.error([...path, "iso"], `"${location}": only local paths and http(s) URLs can be read`);
    } else if (!/^https?:/i.test(location) && !host.exists(iso)) {
      c.warn(
        [...path, "iso"],
        `file ${iso} does not exist (yet); machines booting this entry will fail`,
      );
    }
    const isoPath = (v: unknown, p: Path): string | undefined => {
      const s = c.string(v, p, "a path inside the ISO");
      return s === undefined ? undefined : s.startsWith("/") ? s : `/${s}`;
    };
    const cmdline = isoCmdline(c, o, path);
    const initrdList =
      o.initrd === undefined ? undefined : Array.isArray(o.initrd) ? o.initrd : [o.initrd];
    return {
      ...base,
      kind: "iso",
      iso,
      recipe: c.oneOf(o.recipe, [...path, "recipe"], [...FAMILIES, "cdrom"] as const),
      kernel: isoPath(o.kernel, [...path, "kernel"]),
      initrd: initrdList
        ?.map((x, i) => isoPath(x, [...path, "initrd", i]))
        .filter((x) => x !== undefined),
      cmdline,
      sha256: hex64(c, o.sha256, [...path, "sha256"]),
      checksums: checksumsSpec(c, o.checksums, [...path, "checksums"], baseDir, host),
      signature: isoSignatureSpec(c, o.signature, [...path, "signature"], baseDir, host),
      lazy: c.bool(o.lazy, [...path, "lazy"]) ?? true,
    };
  },
  async plan(entry, ctx) {
    let live;
    try {
      live = await ctx.isos.within(entry, ISO_WAIT_MS);
    } catch (err) {
      const found = err instanceof LiveIsoError ? err.found : [];
      const message = `cannot boot ${entry.iso}: ${(err as Error).message}`;
      ctx.record({
        stage: "iso-error",
        mac: ctx.mac,
        ip: ctx.ip,
        entry: entry.name,
        detail: message,
      });
      const listing = found.length
        ? `; the ISO holds ${found.slice(0, 40).join(" ")}${found.length > 40 ? " …" : ""}`
        : "";
      return { kind: "error", message: message + listing };
    }
    if (live === null) {
      // Still opening (checking the whole ISO, or a slow origin): the machine waits in its
      // boot loader and asks again, instead of an HTTP request timing out.
      const url = `${ctx.base}${ctx.url.pathname}${ctx.url.search}`;
      return { kind: "wait", message: ctx.isos.waitMessage(entry), url, seconds: 5 };
    }
    const isoBase = `${ctx.base}/iso/${encodeURIComponent(entry.name)}`;
    if (live.recipe.family === "cdrom") {
      // No recipe: the boot loader reads the ISO by Range and boots its own El Torito record.
      const url = `${isoBase}/${encodeURIComponent(live.fileName)}`;
      return { kind: "sanboot", url, title: entry.title, noDescribe: true };
    }
    // An overlay carries this server's nbd-client: a machine of another CPU downloads instead.
    const found = await ctx.isos.lazy(entry, live);
    const lazy = found?.overlay && !bundleRunsOn(ctx.cpu) ? null : found;
    const lazyCmdline = lazy && live.lazyCmdline(isoBase, { ...ctx.nbd, name: lazy.exportName });
    return kernelPlan(ctx, entry, {
      // A lazy boot's overlay comes after the ISO's own initrds.
      initrds: live.recipe.initrd.length + (lazyCmdline && lazy?.overlay ? 1 : 0),
      cmdline: lazyCmdline || live.cmdline(isoBase),
    });
  },
  async file(entry, initrd, ctx) {
    const live = await ctx.isos.open(entry);
    if (live.recipe.family === "cdrom") {
      throw new HttpError(
        404,
        `Entry "${entry.name}" boots its ISO as a CD-ROM (sanboot): it has no kernel or initrd`,
      );
    }
    const isoPath = initrd < 0 ? live.recipe.kernel : live.recipe.initrd[initrd];
    if (isoPath === undefined) {
      const lazy = initrd === live.recipe.initrd.length ? await ctx.isos.lazy(entry, live) : null;
      return lazy?.overlay ? { path: lazy.overlay, label: `overlay for ${lazy.hook}` } : null;
    }
    const file = await live.extract(isoPath);
    return { path: file.path, etag: file.sha256, label: `${entry.iso}:${isoPath}` };
  },
  describe: (e) =>
    html`<div>
        ISO
        ${code(e.iso)}${e.recipe ? ` (recipe ${e.recipe})` : ""}${e.lazy ? "" : "; downloaded (lazy: false)"}
      </div>
      ${e.cmdline ? html`<div>cmdline ${code(e.cmdline)}</div>` : ""}`,
};
