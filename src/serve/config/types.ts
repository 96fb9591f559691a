// The boot server's configuration as typed values (parsed and checked by config/parse.ts).
import type { Reservation } from "../../dhcp/leases.ts";
import type { Entry } from "../entries/index.ts";

export type { Entry };

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
}

export type DhcpModeSetting = "off" | "proxy" | "full";

export interface ServeConfig {
  /** Where it came from ("(built-in defaults)" or a file path). */
  source: string;
  listen: { interface?: string; address?: string };
  dhcp: {
    mode: DhcpModeSetting;
    port: number;
    proxyPort: number;
    range?: [string, string];
    netmask?: string;
    router: string[];
    dns: string[];
    domain?: string;
    leaseSeconds: number;
    leaseFile?: string;
    reservations: Reservation[];
  };
  tftp: {
    enabled: boolean;
    port: number;
    root?: string;
    /** Firmware key ("bios", "uefi-x86_64", ...) → iPXE first stage file. */
    firstStages: Record<string, string>;
    /** Every iPXE binary found on the host (undionly.kpxe, ipxe.efi, snponly.efi, ...), by name. */
    ipxeFiles: Record<string, string>;
    maxBlksize: number;
    maxWindowsize: number;
  };
  http: { port: number; address: string; publicUrl?: string };
  /** Where image entries are exported (NBD, the Linux kernel's nbdroot=). */
  /** `allow`: machine — an export opens only for the IP that asked for its plan; any — for all. */
  nbd: { port: number; allow: "machine" | "any" };
  /** The shared chunk cache of image entries (default STATE/cache). */
  cacheDir: string;
  /** State folder: leases, one-shot state, cached remote kernels. */
  stateDir: string;
  /**
   * The dashboard: write actions (roll-back, reset disk) are off unless enabled, and need
   * `token`. With `readToken`, reading the pages, /api and /metrics needs it too (HTTP Basic
   * password or Bearer token); what machines fetch to boot never does.
   */
  ui: { write: boolean; token?: string; readToken?: string };
  entries: Map<string, Entry>;
  machines: MatchRule[];
  default: string;
  warnings: string[];
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`${source}: ${problems.length} problem(s):\n  ${problems.join("\n  ")}`);
    this.problems = problems;
  }
}

/** The menu the server makes of every entry when the configuration has none named so. */
export const BUILTIN_MENU = "menu";
