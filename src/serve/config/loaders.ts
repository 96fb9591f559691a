// Which boot loader a machine's firmware is handed first: iPXE (the default where it works),
// Debian's signed network GRUB, or the Secure Boot chain shim → GRUB. The files come from the
// host's packages (shim-signed, grub-efi-amd64-signed, debian-installer-*-netboot-arm64) or
// from paths in `loaders:`; the default per firmware is here, rules may override it per machine.
import { resolve } from "node:path";
import type { Checker } from "./checker.ts";
import type { HostProbe } from "./host.ts";
import { LOADER_CPUS } from "./types.ts";
import type { LoaderCpu, LoaderFiles } from "./types.ts";

export const LOADERS = ["ipxe", "grub", "shim"] as const;
export type Loader = (typeof LOADERS)[number];

export { LOADER_CPUS };

export interface LoaderConfig extends LoaderFiles {
  /** Firmware key ("uefi-x86_64", "uefi-arm64", …) → the loader it gets by default. */
  defaults: Record<string, Loader>;
}

const FIRMWARE_KEYS = ["bios", "uefi-x86_64", "uefi-arm64"] as const;

/** The `loaders:` section, with the host's files where none is configured. */
export function loaderSection(
  c: Checker,
  value: unknown,
  baseDir: string,
  host: HostProbe,
  /** The iPXE first stages found or configured: where there is one, iPXE stays the default. */
  firstStages: Record<string, string>,
): LoaderConfig {
  const o = c.object(value, ["loaders"], [...FIRMWARE_KEYS, "shim", "grub"]) ?? {};
  const found = host.bootLoaders();
  const files = (kind: "shim" | "grub"): Partial<Record<LoaderCpu, string>> => {
    const out = { ...found[kind] };
    const m = c.object(o[kind], ["loaders", kind], Object.keys(LOADER_CPUS)) ?? {};
    for (const [cpu, v] of Object.entries(m)) {
      const p = c.string(v, ["loaders", kind, cpu], "a string (a path)");
      if (!p) continue;
      const full = resolve(baseDir, p);
      if (!host.exists(full)) c.warn(["loaders", kind, cpu], `file ${full} does not exist`);
      out[cpu as LoaderCpu] = full;
    }
    return out;
  };
  const shim = files("shim");
  const grub = files("grub");
  // iPXE stays the default where there is one (Debian ships x86's); arm64 machines without an
  // iPXE of their own get GRUB, behind shim when it is found.
  const defaults: Record<string, Loader> = { bios: "ipxe", "uefi-x86_64": "ipxe" };
  if (grub.arm64 && !firstStages["uefi-arm64"])
    defaults["uefi-arm64"] = shim.arm64 ? "shim" : "grub";
  for (const key of FIRMWARE_KEYS) {
    const chosen = c.oneOf(o[key], ["loaders", key], LOADERS);
    if (!chosen) continue;
    if (key === "bios" && chosen !== "ipxe") {
      c.error(["loaders", key], "BIOS machines boot through iPXE (GRUB and shim are UEFI only)");
      continue;
    }
    const cpu = key.slice("uefi-".length) as LoaderCpu;
    const missing = loaderMissing({ shim, grub }, chosen, cpu);
    if (missing) c.error(["loaders", key], missing);
    defaults[key] = chosen;
  }
  return { defaults, shim, grub };
}

/** Why `loader` cannot be served to a `cpu` machine (the package to install), or null. */
export function loaderMissing(files: LoaderFiles, loader: Loader, cpu: string): string | null {
  if (loader === "ipxe") return null;
  if (!(cpu in LOADER_CPUS)) return `${loader} is served for x86_64 and arm64 only, not ${cpu}`;
  const c = cpu as LoaderCpu;
  const pkgs =
    c === "x86_64"
      ? { shim: "shim-signed", grub: "grub-efi-amd64-signed" }
      : { shim: "debian-installer-12-netboot-arm64", grub: "debian-installer-12-netboot-arm64" };
  if (!files.grub[c])
    return `no GRUB for ${cpu}: install ${pkgs.grub} or set loaders.grub.${cpu}: PATH`;
  if (loader === "shim" && !files.shim[c])
    return `no shim for ${cpu}: install ${pkgs.shim} or set loaders.shim.${cpu}: PATH`;
  return null;
}

/** The names shim and GRUB are served under (shim loads grubx64.efi from its own folder). */
export function loaderFileNames(files: LoaderFiles): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [cpu, suffix] of Object.entries(LOADER_CPUS)) {
    const shim = files.shim[cpu as LoaderCpu];
    const grub = files.grub[cpu as LoaderCpu];
    if (shim) out[`shim${suffix}.efi`] = shim;
    if (grub) out[`grub${suffix}.efi`] = grub;
  }
  return out;
}
