// The boot server's whole configuration as typed values (parsed and checked by parse.ts).
import type { Entry } from "../entries/index.ts";
import type { LoaderConfig } from "./loaders.ts";
import type { DhcpModeSetting, MatchRule } from "./types.ts";
import type { Reservation } from "../../dhcp/leases.ts";

export type { Entry };

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
  /** iPXE, GRUB or shim → GRUB, per firmware by default; the files of GRUB and shim. */
  loaders: LoaderConfig;
  /** Where image entries are exported (NBD, the Linux kernel's nbdroot=). */
  /** `allow`: machine — an export opens only for the IP that asked for its plan; any — for all. */
  nbd: { port: number; allow: "machine" | "any" };
  /** The shared chunk cache of image entries (default STATE/cache). */
  cacheDir: string;
  /**
   * Keep image entries' chunks uncompressed in the cache as well (warm reads are a pread each;
   * the data is on disk twice). Default true.
   */
  cacheUnpacked: boolean;
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
