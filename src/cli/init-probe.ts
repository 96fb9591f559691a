// What `inetboot init` learns from the boot LAN: whether a DHCP server other than this machine
// answers there (proxy mode beside it) or none does (full mode), with the checks that keep init
// from asking the wrong network or starting a second DHCP server on a LAN that has one.
import { execFileSync } from "node:child_process";
import { networkInterfaces } from "node:os";
import { probeDhcp } from "../dhcp/probe.ts";
import type { DhcpOfferSeen } from "../dhcp/probe.ts";

export interface DhcpDecision {
  mode: "proxy" | "full";
  /** The other DHCP servers that answered (sorted), for proxy mode. */
  servers: string[];
  probed: boolean;
}

/** Every IPv4 address of this machine: offers from them are its own server's (inetboot's). */
function ownAddresses(): Set<string> {
  return new Set(
    Object.values(networkInterfaces())
      .flat()
      .filter((i) => i?.family === "IPv4")
      .map((i) => i.address),
  );
}

/** Whether the interface's address was leased by DHCP (iproute2's "dynamic"); false if unknown. */
function leasedAddress(name: string, address: string): boolean {
  try {
    const out = execFileSync("ip", ["-j", "addr", "show", "dev", name], {
      encoding: "utf8",
      timeout: 2000,
    });
    const links = JSON.parse(out) as { addr_info?: { local?: string; dynamic?: boolean }[] }[];
    return links.some((l) => l.addr_info?.some((a) => a.local === address && a.dynamic === true));
  } catch {
    return false;
  }
}

const ADVICE =
  "say what the LAN has with --dhcp proxy (a DHCP server runs there) or --dhcp full (none does)";

export async function decideDhcp(
  iface: { name: string; address: string; mac: string },
  given: "proxy" | "full" | undefined,
  seconds: number,
  say: (line: string) => void,
): Promise<DhcpDecision> {
  if (given) return { mode: given, servers: [], probed: false };
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 60) {
    throw new Error("--probe-seconds: 0 < seconds ≤ 60");
  }
  say(`Asking ${iface.name} for a DHCP server (up to ${seconds} s)…`);
  let result: { offers: DhcpOfferSeen[]; notTied: string | null };
  try {
    result = await probeDhcp({ interface: iface.name, mac: iface.mac, timeoutMs: seconds * 1000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === "EACCES" || e.code === "EPERM"
        ? "asking the LAN for a DHCP server needs UDP port 68: run init as root (sudo), or"
        : e.code === "EADDRINUSE"
          ? "UDP port 68 is taken by another program:"
          : `the DHCP probe failed (${e.message}):`;
    throw new Error(`${why} ${ADVICE}`, { cause: err });
  }
  if (result.notTied) {
    // Its DISCOVER may have gone out another interface: an answer would be another LAN's.
    throw new Error(`cannot ask ${iface.name} alone (${result.notTied}): ${ADVICE}`);
  }
  const own = ownAddresses();
  const others: DhcpOfferSeen[] = [];
  for (const o of result.offers) {
    const mine = own.has(o.server) || own.has(o.from);
    const via = o.from === o.server ? "" : ` via ${o.from}`;
    const router = o.router ? `, router ${o.router}` : "";
    say(
      `  ${o.server}${via} offered ${o.offered}${router}${mine ? " (this machine's own server)" : ""}`,
    );
    if (mine) continue;
    others.push(o);
    if (o.pxe) {
      say(
        `  ! it answers PXE itself too (boot file ${o.bootFile ?? "?"}): two boot servers on one LAN confuse firmware; turn its PXE answers off`,
      );
    }
  }
  if (others.length > 0) {
    return {
      mode: "proxy",
      servers: [...new Set(others.map((o) => o.server))].sort(),
      probed: true,
    };
  }
  if (result.offers.length === 0) say("  none answered");
  if (leasedAddress(iface.name, iface.address)) {
    throw new Error(
      `${iface.name}'s own address ${iface.address} was leased by DHCP, yet no DHCP server answered: a second one would fight it. If none serves this LAN any more, give --dhcp full`,
    );
  }
  return { mode: "full", servers: [], probed: true };
}
