// Boot recipes for live ISOs: recognise the distribution family from the ISO's layout and say
// which kernel and initrds to boot and with which command line, given the URL the ISO (or its
// files) will be served at. `{iso}` is the ISO's URL, `{tree}` the URL of its files (a folder
// URL ending in "/"), `{file:PATH}` the URL of one file.
//
// Each family that can also boots lazily: the live system's initrd attaches the ISO as a network
// block device (the server's read-only NBD export of it) and finds it as if the CD were in the
// drive, so only the blocks it reads cross the network. Its command line takes `{nbd}`
// (HOST:PORT/EXPORT), `{nbd-host}`, `{nbd-port}`, `{nbd-export}` and `{label}` (the ISO's
// volume label); `hook` names the initrd overlay that teaches the initrd (boot/live-overlay.ts),
// none when the family attaches NBD by itself.
import { isNoDirectory } from "./iso-entry.ts";
import type { IsoImage } from "./iso9660.ts";

export interface BootRecipe {
  /** "cdrom": no kernel of its own; the machine boots the ISO's El Torito record (sanboot). */
  family: Family | "custom" | "cdrom";
  description: string;
  kernel: string;
  initrd: string[];
  /** Template: {iso}, {tree} and {file:PATH} are replaced with URLs. */
  cmdline: string;
  /** The lazy way to boot it (the ISO over NBD), or why there is none. */
  lazy: LazyRecipe | { none: string };
  /** What the download recipe copies into the machine's RAM: "iso" (all) or a path in it. */
  downloads: string | null;
}

/** The initrd frameworks inetboot has an overlay for (boot/live-overlay.ts builds them). */
export type LiveHook = "initramfs-tools" | "dracut";
/** The overlay's initramfs-tools boot script (boot=…), as boot/live-overlay.ts names it. */
const LIVE_BOOT_SCRIPT = "inetboot-live";

export interface LazyRecipe {
  /** Template: {nbd}, {nbd-host}, {nbd-port}, {nbd-export}, {label}. */
  cmdline: string;
  /** The initrd overlay it needs, or null (the family's initrd attaches NBD itself). */
  hook: LiveHook | null;
  /** The only NBD port the family's own client can reach (archiso names no port). */
  port?: number;
}

/** The lazy recipe, or null (lazyMiss says why). */
export function lazyOf(recipe: BootRecipe): LazyRecipe | null {
  return "none" in recipe.lazy ? null : recipe.lazy;
}

/** Why the recipe has no lazy way ("" when it has one). */
export function lazyMiss(recipe: BootRecipe): string {
  return "none" in recipe.lazy ? recipe.lazy.none : "";
}

/**
 * An initramfs-tools family's lazy boot: our boot script, then the family's (boot=FAMILY).
 * live-media=/dev/nbd0 names the medium, so neither scans the other (unattached) nbd devices,
 * and casper does not look for room to make a persistence partition on it.
 */
function initramfsToolsLazy(familyScript: string): LazyRecipe {
  return {
    hook: "initramfs-tools",
    cmdline: `boot=${LIVE_BOOT_SCRIPT} inetboot.boot=${familyScript} inetboot.iso={nbd} live-media=/dev/nbd0 ip=dhcp`,
  };
}

/** Volume labels udev names as they are (dracut's CDLABEL= cannot carry spaces). */
const PLAIN_LABEL = /^[\w.+-]{1,32}$/;

export interface RecipeMiss {
  family: null;
  /** What was looked for, and what the ISO holds at its top levels. */
  message: string;
  found: string[];
}

/** The first of `paths` present in the ISO (as files), or null. */
async function first(iso: IsoImage, paths: string[]): Promise<string | null> {
  for (const p of paths) {
    const e = await iso.stat(p);
    if (e && !e.directory) return p;
  }
  return null;
}

/**
 * The files of `dir` whose names match, sorted; none when `dir` is not in the ISO. Any other
 * failure (a read that failed, a damaged directory) is not "no such files": it propagates, so
 * a network error is never reported as "no recipe fits".
 */
async function files(iso: IsoImage, dir: string, pattern: RegExp): Promise<string[]> {
  let entries;
  try {
    entries = await iso.list(dir);
  } catch (err) {
    if (isNoDirectory(err)) return [];
    throw err;
  }
  return entries
    .filter((e) => !e.directory && pattern.test(e.name))
    .map((e) => `${dir}/${e.name}`)
    .sort();
}

export const FAMILIES = ["casper", "live-boot", "dracut", "archiso", "knoppix"] as const;
export type Family = (typeof FAMILIES)[number];

/** What each family's check looks for, for the message when nothing matches. */
const LOOKED_FOR: Record<Family, string> = {
  casper: "casper/vmlinuz and casper/initrd* (Ubuntu)",
  "live-boot": "live/vmlinuz*, live/initrd* and live/filesystem.squashfs (Debian live)",
  dracut:
    "images/pxeboot/vmlinuz, images/pxeboot/initrd.img and LiveOS/squashfs.img (Fedora/dracut)",
  archiso: "arch/boot/x86_64/vmlinuz-linux and initramfs-linux.img (Arch)",
  knoppix: "boot/isolinux/linux and boot/isolinux/minirt.gz (KNOPPIX)",
};

const DETECT: Record<Family, (iso: IsoImage) => Promise<BootRecipe | null>> = {
  // Ubuntu and derivatives (casper): the booted initrd fetches the whole ISO (url=).
  async casper(iso) {
    const kernel = await first(iso, ["/casper/vmlinuz", "/casper/vmlinuz.efi"]);
    const initrd = await first(iso, [
      "/casper/initrd",
      "/casper/initrd.gz",
      "/casper/initrd.lz",
      "/casper/initrd.img",
    ]);
    if (!kernel || !initrd) return null;
    return {
      family: "casper",
      description: "Ubuntu-style live system (casper)",
      kernel,
      initrd: [initrd],
      cmdline: "boot=casper url={iso} ip=dhcp",
      lazy: initramfsToolsLazy("casper"),
      downloads: "iso",
    };
  },
  // Debian live and derivatives (live-boot): the initrd fetches the squashfs (fetch=).
  async "live-boot"(iso) {
    const kernel = (await files(iso, "/live", /^vmlinuz/))[0];
    const initrd = (await files(iso, "/live", /^initrd/))[0];
    const fs = await first(iso, ["/live/filesystem.squashfs"]);
    if (!kernel || !initrd || !fs) return null;
    return {
      family: "live-boot",
      description: "Debian-style live system (live-boot)",
      kernel,
      initrd: [initrd],
      cmdline: `boot=live fetch={file:${fs}} ip=dhcp`,
      lazy: initramfsToolsLazy("live"),
      downloads: fs,
    };
  },
  // Fedora and other dracut live images: root=live: with the squashfs URL.
  async dracut(iso) {
    const kernel = await first(iso, ["/images/pxeboot/vmlinuz", "/isolinux/vmlinuz"]);
    const initrd = await first(iso, ["/images/pxeboot/initrd.img", "/isolinux/initrd.img"]);
    const liveOs = await first(iso, ["/LiveOS/squashfs.img"]);
    if (!kernel || !initrd || !liveOs) return null;
    return {
      family: "dracut",
      description: "dracut live image (Fedora and relatives)",
      kernel,
      initrd: [initrd],
      cmdline: `root=live:{file:${liveOs}} rd.live.image rd.neednet=1 ip=dhcp`,
      lazy: PLAIN_LABEL.test(iso.volume.volumeId)
        ? {
            hook: "dracut",
            cmdline:
              "root=live:CDLABEL={label} rd.live.image rd.neednet=1 ip=dhcp inetboot.iso={nbd}",
          }
        : {
            none: `dmsquash-live finds the ISO by its volume label, and "${iso.volume.volumeId}" cannot be named on a kernel command line`,
          },
      downloads: liveOs,
    };
  },
  // Arch Linux and archiso-based ISOs: the initrd fetches airootfs from the served tree.
  async archiso(iso) {
    const kernel = await first(iso, ["/arch/boot/x86_64/vmlinuz-linux"]);
    const initrd = await first(iso, ["/arch/boot/x86_64/initramfs-linux.img"]);
    if (!kernel || !initrd) return null;
    const ucode = (await files(iso, "/arch/boot", /-ucode\.img$/)).slice(0, 2);
    return {
      family: "archiso",
      description: "Arch Linux / archiso",
      kernel,
      initrd: [...ucode, initrd],
      cmdline: "archisobasedir=arch archiso_http_srv={tree} ip=dhcp",
      // archiso's own archiso_pxe_nbd hook attaches the ISO (nbd-client HOST -N NAME, on the
      // default port only); copytoram=n keeps it attached instead of copying it into RAM.
      lazy: {
        hook: null,
        cmdline:
          "archisobasedir=arch archiso_nbd_srv={nbd-host} archiso_nbd_name={nbd-export} copytoram=n ip=dhcp",
        port: 10809,
      },
      downloads:
        (await first(iso, ["/arch/x86_64/airootfs.sfs", "/arch/x86_64/airootfs.erofs"])) ?? null,
    };
  },
  // KNOPPIX: kernel and minirt; its initrd needs the KNOPPIX image from a local medium or NFS.
  async knoppix(iso) {
    const kernel = await first(iso, ["/boot/isolinux/linux", "/boot/isolinux/linux64"]);
    const initrd = await first(iso, ["/boot/isolinux/minirt.gz"]);
    if (!kernel || !initrd) return null;
    return {
      family: "knoppix",
      description: "KNOPPIX (its initrd looks for the KNOPPIX folder; give cmdline: to point it)",
      kernel,
      initrd: [initrd],
      cmdline: "knoppix_dir=KNOPPIX",
      lazy: { none: "KNOPPIX's minirt looks for its KNOPPIX folder on local media or NFS only" },
      downloads: null,
    };
  },
};

/** The ISO's family from its layout (or the given family's recipe), or what was found. */
export async function detectRecipe(
  iso: IsoImage,
  family?: Family,
): Promise<BootRecipe | RecipeMiss> {
  const families = family ? [family] : FAMILIES;
  for (const f of families) {
    const recipe = await DETECT[f](iso);
    if (recipe) return recipe;
  }
  const found = await iso.walk("/", 2);
  return {
    family: null,
    message: `${family ? `not a ${family} layout` : "unknown layout"}: looked for ${families.map((f) => LOOKED_FOR[f]).join("; ")}; give kernel:, initrd: and cmdline: in the entry`,
    found,
  };
}

/** Fills a recipe's command line template with URLs (and, for a lazy one, the NBD export). */
export function expandCmdline(
  template: string,
  urls: { iso: string; tree: string; file: (path: string) => string },
  nbd?: { host: string; port: number; name: string; label: string },
): string {
  let out = template
    .replaceAll("{iso}", urls.iso)
    .replaceAll("{tree}", urls.tree)
    .replace(/\{file:([^}]+)\}/g, (_, p: string) => urls.file(p));
  if (nbd) {
    out = out
      .replaceAll("{nbd}", `${nbd.host}:${nbd.port}/${nbd.name}`)
      .replaceAll("{nbd-host}", nbd.host)
      .replaceAll("{nbd-port}", String(nbd.port))
      .replaceAll("{nbd-export}", nbd.name)
      .replaceAll("{label}", nbd.label);
  }
  return out;
}
