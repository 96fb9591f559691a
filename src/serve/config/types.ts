// The value types of the boot server's configuration (the whole: serve-config.ts).
/** A file the server hands out: a host path or an http(s) URL (fetched once, cached). */
export interface FileRef {
  path?: string;
  url?: string;
  /** Expected SHA-256 (hex) of a URL's content; checked before first use. */
  sha256?: string;
}

/** A root disk streamed from a chunk store (exported over NBD by the server). */
export interface ImageRef {
  /** NAME, NAME@REV or NAME@sha256:DIGEST (a pinned release: roll-back). */
  source: string;
  stores: string[];
  /** Minisign public keys (files or base64 lines). */
  trust: string[];
  insecure: boolean;
  /**
   * Seconds between checks for a newer release of a NAME that follows the latest (checked at a
   * machine's plan request; 0: at every one). The next boots get it; disks made on the old one
   * stay there.
   */
  recheckSeconds: number;
}

export interface MatchRule {
  /** "machines[2]" or the rule's `name`. */
  name: string;
  line: number;
  match: {
    mac?: string;
    uuid?: string;
    arch?: string;
    hostname?: string;
    labels?: Record<string, string>;
  };
  boot: string;
  /** The boot loader this machine's firmware gets (else the `loaders:` default). */
  loader?: "ipxe" | "grub" | "shim";
  /** The host name its templates give the machine (cloud-init, preseed). */
  hostname?: string;
}

/** CPUs GRUB and shim are served for, and their EFI file-name suffix (shimx64.efi, …). */
export const LOADER_CPUS = { x86_64: "x64", arm64: "aa64" } as const;
export type LoaderCpu = keyof typeof LOADER_CPUS;

/** shim and GRUB binaries by CPU. */
export interface LoaderFiles {
  /** CPU → Microsoft-signed shim (loads grubARCH.efi from its own folder). */
  shim: Partial<Record<LoaderCpu, string>>;
  /** CPU → a network GRUB (signed for Secure Boot; its built-in prefix finds grub/grub.cfg). */
  grub: Partial<Record<LoaderCpu, string>>;
}

export type DhcpModeSetting = "off" | "proxy" | "full";

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`${source}: ${problems.length} problem(s):\n  ${problems.join("\n  ")}`);
    this.problems = problems;
  }
}

/** The menu the server makes of every entry when the configuration has none named so. */
export const BUILTIN_MENU = "menu";
