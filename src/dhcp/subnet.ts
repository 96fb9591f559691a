// IPv4 subnets: parsed from CIDR text or an address and netmask, and tested for membership.
import { ipToNumber } from "./packet.ts";

export interface Subnet {
  network: number;
  mask: number;
}

function maskOfPrefix(bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/** "10.1.0.0/16" → a Subnet, or an Error saying what was expected. */
export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr);
  if (!m || Number(m[2]) > 32) {
    throw new Error(`Cannot read relay subnet "${cidr}": expected an IPv4 CIDR like 10.1.0.0/16`);
  }
  const mask = maskOfPrefix(Number(m[2]));
  return { network: (ipToNumber(m[1]) & mask) >>> 0, mask };
}

export function subnetOf(address: string, netmask: string): Subnet {
  const mask = ipToNumber(netmask) >>> 0;
  return { network: (ipToNumber(address) & mask) >>> 0, mask };
}

/** Whether `address` lies in one of `subnets`. */
export function inSubnets(address: string, subnets: Subnet[]): boolean {
  const n = ipToNumber(address);
  return subnets.some((s) => (n & s.mask) >>> 0 === s.network);
}
