// What parsing a configuration needs to know about the machine it runs on: which files exist,
// the contents of token files, and where Debian's ipxe package put its binaries. Kept apart so
// parsing is pure: tests hand parseConfig a probe of their own.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import type { LoaderFiles } from "./types.ts";

export interface HostProbe {
  exists(path: string): boolean;
  readText(path: string): string;
  /** Every iPXE binary found, by file name (served over TFTP and HTTP). */
  ipxeFiles(): Record<string, string>;
  /** The iPXE first stage for each firmware key ("bios", "uefi-x86_64", …). */
  firstStages(): Record<string, string>;
  /** Debian's signed shim and network GRUB per CPU, where their packages put them. */
  bootLoaders(): LoaderFiles;
  /** Every address of this machine's interfaces (IPv4 and IPv6, loopback included). */
  localAddresses(): string[];
  /**
   * The addresses a host name resolved to before parsing (loadConfig looks them up, bounded in
   * time), null when it did not resolve, undefined when it was not looked up.
   */
  resolved(name: string): string[] | null | undefined;
}

/** Time a host name of the configuration (http.publicUrl's) may take to resolve. */
export const RESOLVE_TIMEOUT_MS = 2000;

/** What host names resolved to, looked up before parsing (parsing itself never waits). */
export type Resolved = ReadonlyMap<string, string[] | null>;

/** Options of the probes: host names already resolved. */
export interface ProbeOptions {
  resolved?: Resolved;
  /** fakeHost only: the machine's addresses (default: loopback and 10.99.0.1). */
  addresses?: string[];
}

function allAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
}

export const DEFAULT_IPXE_DIRS = ["/usr/lib/ipxe", "/usr/share/ipxe"];

const IPXE_BINARIES = [
  "undionly.kpxe",
  "undionly.kkpxe",
  "ipxe.pxe",
  "ipxe.efi",
  "snponly.efi",
  "ipxe.lkrn",
];

const FIRST_STAGES: [string, string][] = [
  ["bios", "undionly.kpxe"],
  ["uefi-x86_64", "ipxe.efi"],
  ["uefi-i386", "ipxe-i386.efi"],
  ["uefi-arm64", "ipxe-arm64.efi"],
];

/** `files` (key → file name) found in the first of `dirs` that has each. */
function findIn(dirs: string[], files: [string, string][], exists: (p: string) => boolean) {
  const out: Record<string, string> = {};
  for (const [key, file] of files) {
    const found = dirs.map((d) => join(d, file)).find((p) => exists(p));
    if (found) out[key] = found;
  }
  return out;
}

/** Debian-installer netboot trees of every release found (".../images/12/arm64/text/..."). */
function installerDirs(cpu: string): string[] {
  const root = "/usr/lib/debian-installer/images";
  let releases: string[];
  try {
    releases = readdirSync(root).sort().reverse();
  } catch {
    return [];
  }
  return releases.map((r) => join(root, r, cpu, "text", "debian-installer", cpu));
}

/** Where Debian's packages put shim and network GRUB (the installer's as a fallback on arm64). */
function findLoaders(exists: (p: string) => boolean, arm64Dirs: string[]) {
  const first = (...paths: string[]): string | undefined => paths.find((p) => exists(p));
  const x86 = {
    shim: first("/usr/lib/shim/shimx64.efi.signed"),
    grub: first("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
  };
  const arm = {
    shim: first(
      "/usr/lib/shim/shimaa64.efi.signed",
      ...arm64Dirs.map((d) => join(d, "bootnetaa64.efi")),
    ),
    grub: first(
      "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
      ...arm64Dirs.map((d) => join(d, "grubaa64.efi")),
    ),
  };
  const pick = (k: "shim" | "grub") =>
    Object.fromEntries(
      Object.entries({ x86_64: x86[k], arm64: arm[k] }).filter(([, v]) => v !== undefined),
    );
  return { shim: pick("shim"), grub: pick("grub") };
}

/** The real machine. */
export function probeHost(dirs = DEFAULT_IPXE_DIRS, options: ProbeOptions = {}): HostProbe {
  return {
    localAddresses: allAddresses,
    resolved: (name) => options.resolved?.get(name),
    exists: existsSync,
    readText: (path) => readFileSync(path, "utf8"),
    ipxeFiles: () =>
      findIn(
        dirs,
        IPXE_BINARIES.map((n) => [n, n]),
        existsSync,
      ),
    firstStages: () => findIn(dirs, FIRST_STAGES, existsSync),
    bootLoaders: () => findLoaders(existsSync, installerDirs("arm64")),
  };
}

/** A machine where exactly `files` exist (with their contents), iPXE binaries among them. */
export function fakeHost(
  files: Record<string, string> = {},
  dirs = DEFAULT_IPXE_DIRS,
  options: ProbeOptions = {},
): HostProbe {
  const exists = (p: string): boolean => Object.hasOwn(files, p);
  return {
    localAddresses: () => options.addresses ?? ["127.0.0.1", "::1", "10.99.0.1"],
    resolved: (name) => options.resolved?.get(name),
    exists,
    readText: (path) => {
      if (!exists(path)) throw new Error(`ENOENT: no such file, open '${path}'`);
      return files[path];
    },
    ipxeFiles: () =>
      findIn(
        dirs,
        IPXE_BINARIES.map((n) => [n, n]),
        exists,
      ),
    firstStages: () => findIn(dirs, FIRST_STAGES, exists),
    bootLoaders: () =>
      findLoaders(exists, [
        "/usr/lib/debian-installer/images/12/arm64/text/debian-installer/arm64",
      ]),
  };
}
