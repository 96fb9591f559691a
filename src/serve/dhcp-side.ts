// The boot server's DHCP: full (a pool and leases) or proxy (beside another DHCP server), on
// the boot interface; who gets which first stage (plain PXE: iPXE, GRUB or shim → GRUB over
// TFTP; UEFI HTTP Boot: iPXE's URL; iPXE: the boot script), and the NBD root path of a machine
// booting an image entry.
import { basename, join } from "node:path";
import { firmwareKey } from "../dhcp/firmware.ts";
import { LeaseDb } from "../dhcp/leases.ts";
import { DhcpServer } from "../dhcp/server.ts";
import type { BootAnswer, DhcpClient, DhcpServerOptions } from "../dhcp/server.ts";
import type { Logger } from "../lib/log.ts";
import { interfaceAddress, interfaceIndex } from "../net/interface.ts";
import type { ServeConfig } from "./config.ts";
import { LOADER_CPUS, loaderMissing } from "./config/loaders.ts";
import type { EventInput, EventLog } from "./events.ts";
import { loaderOfFile } from "./first-stage-watch.ts";
import type { FirstStageWatch } from "./first-stage-watch.ts";
import type { ImageExports } from "./image-exports.ts";
import { chooseLoader, firmwareArchNames } from "./plan.ts";
import type { Choice, MachineFacts } from "./plan.ts";

export interface DhcpSideOptions {
  config: ServeConfig;
  /** The address machines reach the server at. */
  address: string;
  baseUrl(): string;
  tftp: boolean;
  images(): ImageExports | null;
  nbdPort(): number;
  record(input: EventInput, facts?: Parameters<EventLog["record"]>[1]): void;
  /** Notices iPXE first stages that never ran (Secure Boot refused them). */
  firstStages: FirstStageWatch;
  /** What a machine boots as its plan would choose (the registry, then the rules). */
  choose(facts: MachineFacts): Choice;
  /** The host name its registry record gives a machine, if any. */
  registeredHostname(mac: string): string | undefined;
  log: Logger;
}

/** Plain PXE gets its loader over TFTP (iPXE, GRUB or shim), HTTP Boot a URL, iPXE the script. */
function bootAnswer(o: DhcpSideOptions, client: DhcpClient): BootAnswer | null {
  const fw = client.firmware;
  if (fw.ipxe) return { file: `${o.baseUrl()}/boot.ipxe` };
  const key = firmwareKey(fw);
  const facts = { mac: client.mac, arch: firmwareArchNames(fw), hostname: client.hostname };
  const { loader, rule } = chooseLoader(o.config, { ...facts, labels: {} }, key);
  if (loader !== "ipxe") return grubAnswer(o, client, loader, rule);
  o.firstStages.firmwareAsked(client.mac);
  const stage = o.config.tftp.firstStages[key];
  if (!stage) {
    o.log.warn(
      { mac: client.mac, firmware: key, arch: fw.arch },
      `no iPXE first stage for ${fw.description}; set tftp.firstStages.${key}` +
        (fw.kind === "uefi" ? ` or give it loader: shim (or grub)` : ""),
    );
    return null;
  }
  if (fw.http) return { file: `${o.baseUrl()}/firmware/${basename(stage)}` };
  if (!o.tftp) {
    o.log.warn(
      { mac: client.mac },
      "a PXE client needs TFTP for its first stage; set tftp.enabled: true",
    );
    return null;
  }
  return { file: basename(stage), nextServer: o.address };
}

/** shim (which loads grubARCH.efi beside it) or GRUB itself, over TFTP. */
function grubAnswer(
  o: DhcpSideOptions,
  client: DhcpClient,
  loader: "grub" | "shim",
  rule: string,
): BootAnswer | null {
  const fw = client.firmware;
  const missing = loaderMissing(o.config.loaders, loader, fw.cpu);
  const why = missing
    ? `${missing} (${rule})`
    : fw.http
      ? `UEFI HTTP Boot cannot carry ${loader} → GRUB (${rule}): Debian's signed GRUB has no HTTP, so it could not read its config; the machine's PXE (TFTP) boot option gets it`
      : !o.tftp
        ? `${loader} → GRUB needs TFTP (${rule}); set tftp.enabled: true`
        : null;
  if (why) {
    o.log.warn({ mac: client.mac, firmware: firmwareKey(fw), loader }, why);
    return null;
  }
  const suffix = LOADER_CPUS[fw.cpu as keyof typeof LOADER_CPUS];
  return { file: `${loader}${suffix}.efi`, nextServer: o.address };
}

/** The rule a DHCP client's facts choose (what DHCP knows: MAC, firmware, its host name). */
function clientChoice(o: DhcpSideOptions, client: DhcpClient): Choice {
  const facts = {
    mac: client.mac,
    arch: firmwareArchNames(client.firmware),
    hostname: client.hostname,
    labels: {},
  };
  return o.choose(facts);
}

/**
 * The host name its registry record or its rule gives the machine (installers take it from
 * DHCP option 12).
 */
function ruleHostname(o: DhcpSideOptions, client: DhcpClient): string | undefined {
  const registered = o.registeredHostname(client.mac);
  if (registered) return registered;
  const choice = clientChoice(o, client);
  return o.config.machines.find((r) => r.name === choice.rule && r.line === choice.line)?.hostname;
}

/** "SERVER:PORT/EXPORT" (Debian's nbdroot= syntax) when the machine boots an image entry. */
function rootPath(o: DhcpSideOptions, client: DhcpClient): string | undefined {
  const entry = o.config.entries.get(clientChoice(o, client).entry);
  const images = o.images();
  // DHCP answers whoever sends a MAC: the name goes out only where it opens nothing by
  // itself (nbd.allow: machine binds it to the address that asked for the plan).
  if (entry?.kind !== "image" || !images || o.config.nbd.allow === "any") return undefined;
  const name = images.currentExport(entry.name, client.mac);
  return name ? `${o.address}:${o.nbdPort()}/${name}` : undefined;
}

/** Starts DHCP as configured; the lease database is returned for plan checks (full mode). */
export async function startDhcp(
  o: DhcpSideOptions,
): Promise<{ server: DhcpServer; leases?: LeaseDb }> {
  const c = o.config;
  if (c.listen.interface) interfaceIndex(c.listen.interface); // says so if it does not exist
  const iface = c.listen.interface ? interfaceAddress(c.listen.interface) : undefined;
  if (!c.listen.address && !iface) {
    throw new Error(
      `Interface ${c.listen.interface} has no IPv4 address for DHCP to answer from; give it one or set listen.address`,
    );
  }
  let leases: LeaseDb | undefined;
  const netmask = c.dhcp.netmask ?? iface?.netmask ?? "255.255.255.0";
  if (c.dhcp.mode === "full" && c.dhcp.range) {
    leases = await LeaseDb.open(
      {
        rangeStart: c.dhcp.range[0],
        rangeEnd: c.dhcp.range[1],
        netmask,
        reservations: c.dhcp.reservations,
        leaseSeconds: c.dhcp.leaseSeconds,
      },
      c.dhcp.leaseFile ?? join(c.stateDir, "leases.json"),
    );
  }
  const options: DhcpServerOptions = {
    mode: c.dhcp.mode === "full" ? "full" : "proxy",
    serverAddress: o.address,
    interface: c.listen.interface,
    port: c.dhcp.port,
    proxyPort: c.dhcp.proxyPort,
    leases,
    netmask,
    router: c.dhcp.router,
    dns: c.dhcp.dns,
    domain: c.dhcp.domain,
    leaseSeconds: c.dhcp.leaseSeconds,
    boot: (client) => bootAnswer(o, client),
    rootPath: (client) => rootPath(o, client),
    hostname: (client) => ruleHostname(o, client),
    onEvent: (e) => {
      const facts = {
        ...{ firmware: e.firmware, hostname: e.hostname, uuid: e.firmware?.uuid },
        loader: e.firmware?.ipxe ? undefined : loaderOfFile(e.file),
      };
      o.record({ stage: e.stage, mac: e.mac, ip: e.ip, file: e.file, detail: e.detail }, facts);
    },
    logger: o.log,
  };
  const server = new DhcpServer(options);
  await server.start();
  return { server, leases };
}
