// What a DHCP server is configured with, and what it tells and asks its owner about clients:
// who asks (DhcpClient), where it should boot (BootAnswer), what happened (DhcpEvent).
import type { Logger } from "../lib/log.ts";
import type { Firmware } from "./firmware.ts";
import type { LeaseDb } from "./leases.ts";

export type DhcpMode = "full" | "proxy";

/** What a network-boot client should load next. */
export interface BootAnswer {
  /** Boot file: a TFTP path for PXE, an http:// URL for iPXE and UEFI HTTP Boot. */
  file: string;
  /** Next server (TFTP); default the server's own address. */
  nextServer?: string;
  /** Option 17, e.g. an NBD or iSCSI root. */
  rootPath?: string;
}

export interface DhcpClient {
  mac: string;
  firmware: Firmware;
  hostname?: string;
  /** The address the client has or is being given ("" when unknown). */
  ip: string;
  relay?: string;
}

export interface DhcpEvent {
  stage: string;
  mac: string;
  ip?: string;
  firmware?: Firmware;
  file?: string;
  hostname?: string;
  detail?: string;
}

export interface DhcpServerOptions {
  mode: DhcpMode;
  /** Our address on the boot network: server identifier and default next-server. */
  serverAddress: string;
  /** Only hear and answer on this interface (SO_BINDTOIFINDEX). */
  interface?: string;
  bindAddress?: string;
  port?: number;
  proxyPort?: number;
  clientPort?: number;
  /** Full mode: the pool. */
  leases?: LeaseDb;
  netmask?: string;
  router?: string[];
  dns?: string[];
  domain?: string;
  leaseSeconds?: number;
  /** Option 17 for any client (full mode), e.g. the NBD root of the machine's image entry. */
  rootPath?: (client: DhcpClient) => string | undefined;
  /** Option 12 (full mode) when no reservation names the client: the name it is given. */
  hostname?: (client: DhcpClient) => string | undefined;
  /** Decides the boot file for a network-boot client; null means "do not answer it". */
  boot: (client: DhcpClient) => BootAnswer | null;
  /**
   * Proxy mode: subnets ("10.1.0.0/16") of relay agents to answer besides the server's own.
   * A relayed request (giaddr set) from anywhere else is dropped: the reply would go to giaddr,
   * which a spoofed request chooses (RFC 2131 section 4.1 sends relayed replies to giaddr).
   */
  relaySubnets?: string[];
  onEvent?: (event: DhcpEvent) => void;
  logger?: Logger;
}
