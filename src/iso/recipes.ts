// Boot recipes for live ISOs: recognise the distribution family from the ISO's layout and say
// which kernel and initrds to boot and with which command line, given the URL the ISO (or its
// files) will be served at. `{iso}` is the ISO's URL, `{tree}` the URL of its files (a folder
// URL ending in "/"), `{file:PATH}` the URL of one file.
import type { IsoImage } from "./iso9660.ts";

export interface BootRecipe {
  family: "casper" | "live-boot" | "dracut" | "archiso" | "knoppix";
  description: string;
  kernel: string;
  initrd: string[];
  /** Template: {iso}, {tree} and {file:PATH} are replaced with URLs. */
  cmdline: string;
}

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

async function files(iso: IsoImage, dir: string, pattern: RegExp): Promise<string[]> {
  try {
    return (await iso.list(dir))
      .filter((e) => !e.directory && pattern.test(e.name))
      .map((e) => `${dir}/${e.name}`)
      .sort();
  } catch {
    return [];
  }
}

export async function detectRecipe(iso: IsoImage): Promise<BootRecipe | RecipeMiss> {
  // Ubuntu and derivatives (casper): the booted initrd fetches the whole ISO (url=).
  const casperKernel = await first(iso, ["/casper/vmlinuz", "/casper/vmlinuz.efi"]);
  const casperInitrd = await first(iso, [
    "/casper/initrd",
    "/casper/initrd.gz",
    "/casper/initrd.lz",
    "/casper/initrd.img",
  ]);
  if (casperKernel && casperInitrd) {
    return {
      family: "casper",
      description: "Ubuntu-style live system (casper)",
      kernel: casperKernel,
      initrd: [casperInitrd],
      cmdline: "boot=casper url={iso} ip=dhcp",
    };
  }
  // Debian live and derivatives (live-boot): the initrd fetches the squashfs (fetch=).
  const liveKernel = (await files(iso, "/live", /^vmlinuz/))[0];
  const liveInitrd = (await files(iso, "/live", /^initrd/))[0];
  const liveFs = await first(iso, ["/live/filesystem.squashfs"]);
  if (liveKernel && liveInitrd && liveFs) {
    return {
      family: "live-boot",
      description: "Debian-style live system (live-boot)",
      kernel: liveKernel,
      initrd: [liveInitrd],
      cmdline: `boot=live fetch={file:${liveFs}} ip=dhcp`,
    };
  }
  // Fedora and other dracut live images: root=live: with the squashfs URL.
  const dracutKernel = await first(iso, ["/images/pxeboot/vmlinuz", "/isolinux/vmlinuz"]);
  const dracutInitrd = await first(iso, ["/images/pxeboot/initrd.img", "/isolinux/initrd.img"]);
  const liveOs = await first(iso, ["/LiveOS/squashfs.img"]);
  if (dracutKernel && dracutInitrd && liveOs) {
    return {
      family: "dracut",
      description: "dracut live image (Fedora and relatives)",
      kernel: dracutKernel,
      initrd: [dracutInitrd],
      cmdline: `root=live:{file:${liveOs}} rd.live.image rd.neednet=1 ip=dhcp`,
    };
  }
  // Arch Linux and archiso-based ISOs: the initrd fetches airootfs from the served tree.
  const archKernel = await first(iso, ["/arch/boot/x86_64/vmlinuz-linux"]);
  const archInitrd = await first(iso, ["/arch/boot/x86_64/initramfs-linux.img"]);
  if (archKernel && archInitrd) {
    const ucode = (await files(iso, "/arch/boot", /-ucode\.img$/)).slice(0, 2);
    return {
      family: "archiso",
      description: "Arch Linux / archiso",
      kernel: archKernel,
      initrd: [...ucode, archInitrd],
      cmdline: "archisobasedir=arch archiso_http_srv={tree} ip=dhcp",
    };
  }
  // KNOPPIX: kernel and minirt; its initrd needs the KNOPPIX image from a local medium or NFS.
  const knoppixKernel = await first(iso, ["/boot/isolinux/linux", "/boot/isolinux/linux64"]);
  const knoppixInitrd = await first(iso, ["/boot/isolinux/minirt.gz"]);
  if (knoppixKernel && knoppixInitrd) {
    return {
      family: "knoppix",
      description: "KNOPPIX (its initrd looks for the KNOPPIX folder; give cmdline: to point it)",
      kernel: knoppixKernel,
      initrd: [knoppixInitrd],
      cmdline: "knoppix_dir=KNOPPIX",
    };
  }
  const found = await iso.walk("/", 2);
  return {
    family: null,
    message:
      "unknown layout: looked for casper/ (Ubuntu), live/ with filesystem.squashfs (Debian live), images/pxeboot/ with LiveOS/squashfs.img (Fedora/dracut), arch/boot/x86_64/ (Arch), boot/isolinux/minirt.gz (KNOPPIX); give kernel:, initrd: and cmdline: in the entry",
    found,
  };
}

/** Fills a recipe's command line template with URLs. */
export function expandCmdline(
  template: string,
  urls: { iso: string; tree: string; file: (path: string) => string },
): string {
  return template
    .replaceAll("{iso}", urls.iso)
    .replaceAll("{tree}", urls.tree)
    .replace(/\{file:([^}]+)\}/g, (_, p: string) => urls.file(p));
}
