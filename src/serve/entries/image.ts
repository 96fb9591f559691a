// A root disk streamed from a chunk store: the machine boots a kernel and initrd (its own or
// the configured ones) and mounts the image over NBD through a copy-on-write overlay of its
// own, exported under a per-boot name (image-exports.ts).
import { resolve } from "node:path";
import { BUNDLE_CPU, bundleRunsOn } from "../../boot/nbd-client-bundle.ts";
import { nbdOverlayCmdline, nbdRootCmdline } from "../../boot/nbd-overlay.ts";
import { fileRef, initrds } from "../config/checker.ts";
import type { FileRef, ImageRef } from "../config/types.ts";
import { redactedExport } from "../export-tickets.ts";
import { code, codes, html } from "../ui/html.ts";
import { configuredFile, kernelWhat } from "./kernel.ts";
import { kernelPlan } from "./kind.ts";
import type { EntryBase, EntryKind, PlanContext } from "./kind.ts";
import type { ExtractedBoot } from "../image-boot-files.ts";

export type ImageEntry = EntryBase & {
  kind: "image";
  /** None: the image's own kernel, initrd and command line (image-boot-files.ts). */
  kernel?: FileRef;
  initrd: FileRef[];
  cmdline: string;
  image: ImageRef;
  /** ephemeral: a fresh overlay each boot; per-machine: one kept per MAC. */
  disk: "ephemeral" | "per-machine";
  /**
   * Append inetboot's NBD overlay to an initramfs-tools initrd without nbd-client; "auto" (the
   * default for a kernel from the image): when the image's initrd has none.
   */
  nbdOverlay: boolean | "auto";
};

/** Whether a boot of `entry` with the image's own files gets the NBD overlay. */
function overlayFor(entry: ImageEntry, boot: ExtractedBoot | null): boolean {
  return entry.nbdOverlay === "auto" ? !boot?.nbdClient : entry.nbdOverlay;
}

/** The image's boot files for the machine, or an error plan's message. */
async function imageBoot(
  entry: ImageEntry,
  ctx: PlanContext,
  mac: string,
): Promise<ExtractedBoot | string> {
  try {
    return await ctx.images!.boot(entry, mac);
  } catch (err) {
    const message = `cannot take the kernel from image ${entry.image.source}: ${(err as Error).message}`;
    ctx.record({ stage: "image-error", mac, ip: ctx.ip, entry: entry.name, detail: message });
    return message;
  }
}

/**
 * What an image source is when it cannot carry a signature: a bare .caibx index, or a plain
 * image URL (served as it is); null for a release (NAME…, a release .json).
 */
function unsignedSource(source: string): string | null {
  if (/\.caibx$/i.test(source)) return "a bare index (.caibx)";
  if (/^[a-z]+:\/\//i.test(source) && !/\.json$/i.test(source)) return "a plain image URL";
  return null;
}

export const imageKind: EntryKind<ImageEntry> = {
  kind: "image",
  keys: ["image", "kernel", "initrd", "cmdline", "disk", "nbd-overlay"],
  parse(c, o, base, { path, baseDir, host }) {
    const ip = [...path, "image"];
    const io = c.object(o.image, ip, ["name", "store", "trust", "insecure", "recheck"]) ?? {};
    const source = c.string(
      io.name,
      [...ip, "name"],
      "an image name (NAME, NAME@REV, NAME@sha256:…)",
    );
    const list = (v: unknown, key: string): string[] =>
      (v === undefined ? [] : Array.isArray(v) ? v : [v])
        .map((x, i) =>
          c.string(
            x,
            Array.isArray(v) ? [...ip, key, i] : [...ip, key],
            "a string (a path or URL)",
          ),
        )
        .filter((x) => x !== undefined)
        .map((x) =>
          /^[a-z]+:\/\//i.test(x) || /^RW[A-Za-z0-9+/=]{54}$/.test(x) ? x : resolve(baseDir, x),
        );
    const stores = list(io.store, "store");
    const trust = list(io.trust, "trust");
    const insecure = c.bool(io.insecure, [...ip, "insecure"]) ?? false;
    if (!source) c.error(ip, "an image needs name");
    if (stores.length === 0)
      c.error(ip, "an image needs store: a URL or folder (or a list of mirrors)");
    const unsigned = source === undefined ? null : unsignedSource(source);
    if (unsigned && trust.length > 0) {
      c.error(
        [...ip, "name"],
        `${source} is ${unsigned}: it carries no signature, so trust cannot be checked against it; name a signed release (NAME, NAME@REV, NAME@sha256:…) or drop trust and set insecure: true to serve it unchecked`,
      );
    } else if (unsigned && !insecure) {
      c.error(
        [...ip, "name"],
        `${source} is ${unsigned}: it carries no signature, so nothing vouches for it; name a signed release (NAME, NAME@REV, NAME@sha256:…) with trust: [public key files], or set insecure: true to serve it unchecked`,
      );
    } else if (trust.length === 0 && !insecure) {
      c.error(
        ip,
        "an image needs trust: [public key files] (or insecure: true to accept unsigned releases)",
      );
    }
    if (o.kernel === undefined && o.initrd !== undefined)
      c.error(
        [...path, "initrd"],
        "initrd: needs kernel: (without both, the image's own are booted)",
      );
    const kernel =
      o.kernel === undefined ? undefined : fileRef(c, o.kernel, [...path, "kernel"], baseDir, host);
    const initrd = initrds(c, o.initrd, [...path, "initrd"], baseDir, host);
    const disk =
      c.oneOf(o.disk, [...path, "disk"], ["ephemeral", "per-machine"] as const) ?? "ephemeral";
    if ((o.kernel !== undefined && !kernel) || !source) return undefined;
    if (o["nbd-overlay"] === "auto" && kernel)
      c.error(
        [...path, "nbd-overlay"],
        "auto looks through the image's own initrd; with kernel: and initrd: say true or false",
      );
    const overlay =
      o["nbd-overlay"] === "auto"
        ? "auto"
        : (c.bool(o["nbd-overlay"], [...path, "nbd-overlay"]) ?? (kernel ? false : "auto"));
    return {
      ...base,
      kind: "image",
      kernel,
      initrd,
      cmdline: c.text(o.cmdline, [...path, "cmdline"]) ?? "",
      image: {
        source,
        stores,
        trust,
        insecure,
        recheckSeconds: c.int(io.recheck, [...ip, "recheck"], 0, 86_400) ?? 60,
      },
      disk,
      nbdOverlay: overlay,
    };
  },
  async plan(entry, ctx) {
    const { mac, ip } = ctx;
    if (!mac)
      return { kind: "error", message: `${entry.name} needs the machine's MAC (chain /boot.ipxe)` };
    if (!ctx.images) return { kind: "error", message: "the NBD server is not running" };
    if (entry.nbdOverlay === true && !bundleRunsOn(ctx.cpu)) {
      return {
        kind: "error",
        message: `${entry.name} adds this server's ${BUNDLE_CPU} nbd-client (nbd-overlay), which cannot run on this ${ctx.cpu} machine: give the entry an initrd with its own nbd-client and drop nbd-overlay`,
      };
    }
    let name: string;
    try {
      name = await ctx.images.prepare(entry, mac, ip);
    } catch (err) {
      const message = `cannot open image ${entry.image.source}: ${(err as Error).message}`;
      ctx.record({ stage: "image-error", mac, ip, entry: entry.name, detail: message });
      return { kind: "error", message };
    }
    const stays = ctx.images.staysOn(entry.name, mac);
    ctx.record({
      stage: "nbd-export",
      mac,
      ip,
      entry: entry.name,
      // The token is the machine's: events and logs show only its start.
      detail: `${redactedExport(name)}${stays ? ` (its disk stays on ${stays}, where it was made)` : ""}`,
    });
    const boot = entry.kernel ? null : await imageBoot(entry, ctx, mac);
    if (typeof boot === "string") return { kind: "error", message: boot };
    if (boot?.scanError && entry.nbdOverlay === "auto") {
      return {
        kind: "error",
        message: `${entry.name}: cannot tell whether the image's initrd has nbd-client (${boot.scanError}): set nbd-overlay: true (it has none) or false (it has)`,
      };
    }
    const overlay = overlayFor(entry, boot);
    if (boot && overlay) {
      const why = !bundleRunsOn(ctx.cpu)
        ? `this server's ${BUNDLE_CPU} nbd-client cannot run on this ${ctx.cpu} machine`
        : boot.builder === "dracut"
          ? "the overlay fits initramfs-tools initrds, and this one is dracut's"
          : null;
      if (why) {
        return {
          kind: "error",
          message: `${entry.name}: the image's initrd (${boot.initrdPaths.join(", ") || "none"}) has no nbd-client and ${why}: rebuild it with NBD support (dracut --add nbd; Debian: apt install nbd-client) or give the entry kernel: and initrd:`,
        };
      }
    }
    const { host, port } = ctx.nbd;
    const device = boot?.nbdRoot ?? "/dev/nbd0";
    const root = overlay
      ? nbdOverlayCmdline(host, port, name, device)
      : nbdRootCmdline(host, port, name, device);
    const own = boot ? boot.initrds.length : entry.initrd.length;
    return kernelPlan(ctx, entry, {
      initrds: own + (overlay ? 1 : 0),
      cmdline: [boot?.cmdline, entry.cmdline, root].filter(Boolean).join(" "),
    });
  },
  async file(entry, initrd, ctx) {
    if (!entry.kernel && !ctx.images) throw new Error("the NBD server is not running");
    const boot = entry.kernel ? null : await ctx.images!.boot(entry, ctx.mac ?? "");
    const own = boot ? boot.initrds.length : entry.initrd.length;
    // The NBD overlay comes after the entry's own initrds.
    if (initrd === own && overlayFor(entry, boot)) {
      if (!ctx.nbdOverlay)
        throw new Error("the NBD overlay could not be built (is nbd-client installed?)");
      return { path: ctx.nbdOverlay, label: ctx.nbdOverlay };
    }
    if (!boot) return configuredFile({ kernel: entry.kernel!, initrd: entry.initrd }, initrd, ctx);
    const path = initrd < 0 ? boot.kernel : boot.initrds[initrd];
    const label = initrd < 0 ? boot.kernelPath : boot.initrdPaths[initrd];
    return path ? { path, label: `${entry.image.source}:${label}` } : null;
  },
  describe: (e) =>
    html`<div>
        image ${code(e.image.source)} from ${codes(e.image.stores)}; disk
        ${e.disk}${e.nbdOverlay === true ? "; NBD overlay" : ""}
      </div>
      ${e.kernel ? kernelWhat({ ...e, kernel: e.kernel }) : html`<div>kernel, initrd and command line from the image${e.cmdline ? html`, plus ${code(e.cmdline)}` : ""}</div>`}`,
};
