// `inetboot iso inspect`: what an ISO holds and how inetboot would boot it, read by Range
// requests when it is a URL (never downloaded whole).
import type { Command } from "commander";
import { openRawDevice } from "../block/open-stack.ts";
import { IsoImage } from "../iso/iso9660.ts";
import { detectRecipe } from "../iso/recipes.ts";
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
          `  cmdline     ${recipe.cmdline}`,
          "              ({iso}: the ISO's URL, {tree}: its files' folder URL, {file:PATH}: one file's URL)",
        );
        console.log(lines.join("\n"));
      } finally {
        await device.close();
      }
    });
}
