// Which recipe boots a live ISO: its detected (or forced) family with the entry's overrides, a
// custom one from the entry's kernel, or the ISO's own El Torito record (cdrom).
import type { IsoImage } from "./iso9660.ts";
import { LiveIsoError } from "./live-iso-error.ts";
import type { LiveIsoOptions } from "./live-iso-options.ts";
import { detectRecipe } from "./recipes.ts";
import type { BootRecipe, Family } from "./recipes.ts";

/**
 * The recipe for `image`: the family detected (or forced), with the entry's kernel/initrd
 * overrides; a custom one when no family fits but the entry names a kernel; else, with
 * `cdromFallback` or `family: "cdrom"`, the ISO's own El Torito record (sanboot).
 */
export async function chooseRecipe(
  image: IsoImage,
  source: string,
  options: LiveIsoOptions,
): Promise<BootRecipe> {
  const forced = options.family === "cdrom";
  const found = forced ? null : await detectRecipe(image, options.family as Family | undefined);
  if (found && found.family !== null) {
    return {
      ...found,
      kernel: options.kernel ?? found.kernel,
      initrd: options.initrd ?? found.initrd,
    };
  }
  if (found && options.kernel) {
    return {
      family: "custom",
      description: "kernel, initrd and cmdline from the entry",
      kernel: options.kernel,
      initrd: options.initrd ?? [],
      cmdline: "",
      lazy: { none: "no family recipe fits: the entry's own kernel and cmdline boot it" },
      downloads: null,
    };
  }
  // A forced family that does not fit is an error, never a CD-ROM boot.
  if (found && (!options.cdromFallback || options.family !== undefined)) {
    throw new LiveIsoError(`${source}: ${found.message}`, found.found);
  }
  const records = image.volume.elTorito.filter((e) => e.bootable);
  if (records.length === 0) {
    throw new LiveIsoError(
      `${source}: ${found ? `${found.message}; ` : ""}it has no bootable El Torito record either, so it cannot boot as a CD-ROM`,
      found ? found.found : await image.walk("/", 2),
    );
  }
  return {
    family: "cdrom",
    description: `no live-system recipe${forced ? " (recipe: cdrom)" : " fits"}: the machine boots the ISO's own boot record (${records.map((e) => e.platform).join(", ")}) through iPXE's sanboot`,
    kernel: "",
    initrd: [],
    cmdline: "",
    lazy: { none: "iPXE's sanboot reads the ISO by HTTP Range: it is lazy already" },
    downloads: null,
  };
}
