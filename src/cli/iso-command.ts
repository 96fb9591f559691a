// `inetboot iso inspect`: what an ISO holds and how inetboot would boot it, read by Range
// requests when it is a URL (never downloaded whole).
import type { Command } from "commander";
import { openRawDevice } from "../block/open-stack.ts";
import { IsoImage } from "../iso/iso9660.ts";
import { detectRecipe, lazyMiss, lazyOf } from "../iso/recipes.ts";
import type { BootRecipe } from "../iso/recipes.ts";

/** Whether (and how) the family boots with the ISO attached over NBD, or why it downloads. */
function lazyLine(recipe: BootRecipe): string {
  const lazy = lazyOf(recipe);
  if (!lazy) return `no: ${lazyMiss(recipe)}; the guest downloads`;
  const how = lazy.hook
    ? `inetboot's ${lazy.hook} overlay (the server's nbd-client and a hook) is appended to the initrd`
    : "the family's own initrd attaches it";
  const port = lazy.port ? `; its client reaches NBD port ${lazy.port} only` : "";
  return `yes: the ISO is attached over NBD as /dev/nbd0 (${how}${port})`;
}

/** What the download recipe copies into the guest's RAM. */
function downloadLine(recipe: BootRecipe): string {
  if (recipe.downloads === null) return "nothing";
  return recipe.downloads === "iso"
    ? "the download recipe copies the whole ISO"
    : `the download recipe copies ${recipe.downloads}`;
}
import { formatBytes } from "../lib/format.ts";

export function registerIsoCommands(program: Command): void {
  const iso = program.command("iso").description("live ISO images");
  iso
    .command("inspect")
    .description(
      "show an ISO's volume, boot catalog, distribution family, and the kernel, initrd and command line inetboot would boot",
    )
    .argument("<source>", "an ISO file or http(s) URL (read by Range requests)")
    .option("--json", "print the result as JSON")
    .action(async (source: string, opts: { json?: boolean }) => {
      const device = await openRawDevice(source);
      try {
        const image = await IsoImage.open(device, source);
        const recipe = await detectRecipe(image);
        if (opts.json) {
          console.log(
            JSON.stringify({ source, size: device.size, volume: image.volume, recipe }, null, 2),
          );
          return;
        }
        const v = image.volume;
        const lines = [
          `${source}: ISO 9660, ${formatBytes(device.size)}`,
          `  volume      ${JSON.stringify(v.volumeId)}${v.created ? `, created ${v.created}` : ""}${v.application ? `, by ${v.application}` : ""}`,
          `  names       ${[v.rockRidge ? "Rock Ridge" : "", v.joliet ? "Joliet" : "", "ISO 9660"].filter(Boolean).join(", ")}`,
          `  El Torito   ${v.elTorito.length === 0 ? "none (not bootable from CD)" : v.elTorito.map((e) => `${e.platform}${e.bootable ? "" : " (not bootable)"} ${e.emulation === "none" ? "no emulation" : e.emulation}`).join("; ")}`,
        ];
        if (recipe.family === null) {
          const bootable = v.elTorito.some((e) => e.bootable);
          lines.push(
            `  family      ${recipe.message}`,
            bootable
              ? "  boot        as a CD-ROM: inetboot serve has iPXE sanboot it (inetboot run boots it as a CD-ROM)"
              : "  boot        none: no recipe and no El Torito record (give kernel: and initrd: paths)",
            "  found:",
            ...recipe.found.map((f) => `    ${f}`),
          );
          console.log(lines.join("\n"));
          // Bootable as a CD is still a way to boot it.
          process.exitCode = bootable ? 0 : 1;
          return;
        }
        lines.push(
          `  family      ${recipe.family}: ${recipe.description}`,
          `  kernel      ${recipe.kernel}`,
          `  initrd      ${recipe.initrd.join(" ")}`,
          `  lazy        ${lazyLine(recipe)}`,
          `  cmdline     ${lazyOf(recipe)?.cmdline ?? recipe.cmdline}`,
          lazyOf(recipe)
            ? "              ({nbd}: HOST:PORT/EXPORT of the ISO's NBD export, {nbd-host}, {nbd-export}, {label}: its volume label)"
            : "              ({iso}: the ISO's URL, {tree}: its files' folder URL, {file:PATH}: one file's URL)",
          `  download    ${recipe.cmdline}${lazyOf(recipe) ? "  (with lazy: false / run --download)" : ""}`,
          `  RAM copy    ${downloadLine(recipe)}`,
        );
        console.log(lines.join("\n"));
      } finally {
        await device.close();
      }
    });
}
