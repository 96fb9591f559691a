// What a machine says about itself in a plan request (iPXE's query string) and the Host it
// used, bounded: anyone on the boot LAN can send these, so every string kept from them has a
// length limit and the labels a count limit. Pure functions, no I/O.
import { macFromQuery } from "./http-util.ts";
import { IPXE_FACTS } from "./ipxe-render.ts";
import { ipxeArchNames } from "./plan.ts";
import type { MachineFacts } from "./plan.ts";

/** Longest host name kept (a DNS name is at most 253 characters). */
export const MAX_HOSTNAME = 253;
/** Labels kept from one request (rules match on a few: rack, role, site). */
export const MAX_LABELS = 16;
export const MAX_LABEL_KEY = 64;
export const MAX_LABEL_VALUE = 256;

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/;

/** A value cut to `max` characters, without control characters; undefined if empty. */
export function boundedText(value: string | null | undefined, max: number): string | undefined {
  if (!value) return undefined;
  // eslint-disable-next-line no-control-regex
  const clean = value.slice(0, max * 2).replace(/[\u0000-\u001f\u007f]/g, "");
  return clean.slice(0, max) || undefined;
}

/** The facts of a plan request; `macFromIp` is the MAC DHCP saw at the request's address. */
export function requestFacts(q: URLSearchParams, macFromIp: string | undefined): MachineFacts {
  const labels: Record<string, string> = Object.create(null) as Record<string, string>;
  let count = 0;
  for (const [k, v] of q) {
    if (IPXE_FACTS.includes(k) || v === "" || k.length > MAX_LABEL_KEY) continue;
    if (count++ >= MAX_LABELS) break;
    labels[k] = boundedText(v, MAX_LABEL_VALUE) ?? "";
  }
  const uuid = q.get("uuid")?.toLowerCase();
  return {
    mac: macFromQuery(q.get("mac")?.slice(0, 64) ?? null) ?? macFromIp,
    uuid: uuid && UUID.test(uuid) ? uuid : undefined,
    arch: ipxeArchNames(
      boundedText(q.get("buildarch"), 32) ?? undefined,
      boundedText(q.get("platform"), 32) ?? undefined,
    ),
    hostname: boundedText(q.get("hostname"), MAX_HOSTNAME),
    labels,
  };
}

/**
 * `http://HOST` from a Host header when it is a valid host[:port] (a name, an IPv4 address or
 * a bracketed IPv6 address); null otherwise ("[", "a b", "x@y" …), so links fall back to the
 * server's own address.
 */
export function baseFromHost(host: string | undefined): string | null {
  if (!host || host.length > 300 || !/^[\w.:[\]-]+$/.test(host)) return null;
  try {
    return new URL(`http://${host}`).hostname ? `http://${host}` : null;
  } catch {
    return null;
  }
}
