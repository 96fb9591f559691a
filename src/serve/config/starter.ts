// The first serve.yaml `inetboot init` writes: from what it found on the machine and the link
// (the boot interface, an existing DHCP server or none, the boot files installed), a working
// configuration with a menu that boots something real, commented so it can be edited.
import { existsSync, readdirSync } from "node:fs";
import { ipToNumber, numberToIp } from "../../dhcp/packet.ts";

const INSTALLER_IMAGES = "/usr/lib/debian-installer/images";
/** The package that adds Debian's netboot installer (for the hint when none is installed). */
export const DEBIAN_INSTALLER_PACKAGE = "debian-installer-12-netboot-amd64";

export interface DebianInstaller {
  /** Debian's release number (12, 13, …). */
  release: number;
  kernel: string;
  initrd: string;
}

/**
 * The newest amd64 netboot installer a debian-installer-N-netboot-amd64 package installed
 * (images/N/amd64/text/debian-installer/amd64/{linux,initrd.gz}), or undefined.
 */
export function findDebianInstaller(root = INSTALLER_IMAGES): DebianInstaller | undefined {
  let releases: number[];
  try {
    releases = readdirSync(root)
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .sort((a, b) => b - a);
  } catch {
    return undefined;
  }
  for (const release of releases) {
    const dir = `${root}/${release}/amd64/text/debian-installer/amd64`;
    const found = { release, kernel: `${dir}/linux`, initrd: `${dir}/initrd.gz` };
    if (existsSync(found.kernel) && existsSync(found.initrd)) return found;
  }
  return undefined;
}

export interface StarterFacts {
  interface: string;
  address: string;
  /** proxy: another DHCP server gives addresses; full: this one does, from `range`. */
  dhcp: { mode: "proxy"; servers: string[] } | { mode: "full"; range: [string, string] };
  /** The mode came from asking the link (false: from the user). */
  probed: boolean;
  state?: string;
  cache?: string;
  /** Boot Debian's installer from its installed netboot package. */
  debianInstaller?: DebianInstaller;
  /** A live ISO's URL or path. */
  iso?: string;
  /** An iPXE script to chain (a netboot.xyz-style menu). */
  chain?: string;
  /** A serial console for the kernels' command lines (ttyS0,115200: IPMI serial-over-LAN). */
  console?: string;
}

/**
 * The upper half of the interface's subnet for leases (the lower half is left for the hosts
 * already there, the router usually at .1); when our own address falls inside, the larger side
 * of it. Undefined when the subnet is too small to share (smaller than /28).
 */
export function freeRange(address: string, netmask: string): [string, string] | undefined {
  const mask = ipToNumber(netmask);
  const size = 2 ** 32 - mask;
  if (size < 16) return undefined;
  const network = (ipToNumber(address) & mask) >>> 0;
  let first = network + size / 2;
  let last = network + size - 2; // before the broadcast address
  if (last - first > 199) first = last - 199; // at most 200 leases
  const own = ipToNumber(address);
  if (own >= first && own <= last) {
    if (own - first > last - own) last = own - 1;
    else first = own + 1;
  }
  return [numberToIp(first), numberToIp(last)];
}

const q = (text: string): string => JSON.stringify(text);

/** serve.yaml's text for these facts. */
export function starterConfig(f: StarterFacts): string {
  const lines: string[] = [
    "# Written by `inetboot init`: edit freely (docs/serve.md explains every key).",
    "# `inetboot serve --check` checks it; a running server reloads it when it changes.",
    `listen: { interface: ${f.interface}, address: ${f.address} }`,
  ];
  if (f.dhcp.mode === "proxy") {
    const who = f.probed ? f.dhcp.servers.join(", ") : "A DHCP server";
    lines.push(
      `# ${who} already gives addresses on ${f.interface}: inetboot only adds the boot`,
      "# answers (proxyDHCP), so nothing changes for the machines that do not network-boot.",
      "dhcp: { mode: proxy }",
    );
  } else {
    lines.push(
      f.probed
        ? `# No DHCP server answered on ${f.interface}: inetboot gives addresses from this range`
        : `# inetboot is the DHCP server on ${f.interface}: it gives addresses from this range`,
      "# (check no host uses them; add router: and dns: if the machines need to reach beyond).",
      `dhcp: { mode: full, range: [${f.dhcp.range[0]}, ${f.dhcp.range[1]}] }`,
    );
  }
  lines.push("tftp: { enabled: true } # PXE ROMs fetch their first stage (iPXE) over TFTP");
  if (f.state) lines.push(`state: ${f.state}`);
  if (f.cache) lines.push(`cache: { dir: ${f.cache} }`);
  const console = f.console ? ` console=${f.console}` : "";
  const entries: [string, string][] = [];
  const di = f.debianInstaller;
  if (di) {
    entries.push([
      "debian-installer",
      `{ title: "Install Debian ${di.release}", kernel: ${di.kernel}, initrd: [${di.initrd}]${console ? `, cmdline: ${q(console.trim())}` : ""} }`,
    ]);
  }
  if (f.iso) {
    entries.push([
      "live",
      `{ title: "Live system", iso: ${q(f.iso)}${console ? `, cmdline: ${q(console.trim())}` : ""} }`,
    ]);
  }
  if (f.chain) entries.push(["netboot", `{ title: "Network boot menu", chain: ${q(f.chain)} }`]);
  const names = entries.map(([name]) => name);
  lines.push("entries:");
  for (const [name, text] of entries) lines.push(`  ${name}: ${text}`);
  const first = names[0];
  lines.push(
    `  menu: { title: "inetboot", menu: [${[...names, "local", "shell"].join(", ")}], timeout: 10, default: ${first ?? "local"} }`,
    "default: menu",
    "",
  );
  return lines.join("\n");
}
