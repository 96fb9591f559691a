// The sections of the configuration besides entries and machines: where the server listens,
// DHCP, TFTP, HTTP, NBD, cache and state folders, the dashboard's tokens.
import { isIP } from "node:net";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { ipToNumber } from "../../dhcp/packet.ts";
import type { Reservation } from "../../dhcp/leases.ts";
import type { Checker } from "./checker.ts";
import { RESOLVE_TIMEOUT_MS } from "./host.ts";
import type { HostProbe } from "./host.ts";
import type { ServeConfig } from "./serve-config.ts";

function defaultStateDir(): string {
  const base = process.env.INETBOOT_STATE_DIR ?? join(homedir(), ".local", "state", "inetboot");
  return join(base, "serve");
}

type Sections = Pick<ServeConfig, "listen" | "dhcp" | "tftp" | "http">;

/** listen, dhcp, tftp and http. */
export function networkSections(
  c: Checker,
  top: Record<string, unknown>,
  baseDir: string,
  host: HostProbe,
): Sections {
  const listenRaw = c.object(top.listen, ["listen"], ["interface", "address"]) ?? {};
  const listen = {
    interface: c.string(listenRaw.interface, ["listen", "interface"]),
    address: c.ip(listenRaw.address, ["listen", "address"]),
  };

  const d =
    c.object(
      top.dhcp,
      ["dhcp"],
      [
        "mode",
        "port",
        "proxyPort",
        "range",
        "netmask",
        "router",
        "dns",
        "domain",
        "leaseTime",
        "leaseFile",
        "reservations",
      ],
    ) ?? {};
  const mode = c.oneOf(d.mode, ["dhcp", "mode"], ["off", "proxy", "full"] as const) ?? "off";
  let range: [string, string] | undefined;
  if (d.range !== undefined) {
    if (!Array.isArray(d.range) || d.range.length !== 2) {
      c.error(["dhcp", "range"], "expected [first, last] addresses");
    } else {
      const a = c.ip(d.range[0], ["dhcp", "range", 0]);
      const b = c.ip(d.range[1], ["dhcp", "range", 1]);
      if (a && b) {
        if (ipToNumber(a) > ipToNumber(b)) c.error(["dhcp", "range"], `${a} comes after ${b}`);
        else range = [a, b];
      }
    }
  }
  const reservations: Reservation[] = [];
  if (d.reservations !== undefined) {
    if (!Array.isArray(d.reservations))
      c.error(["dhcp", "reservations"], "expected a list of { mac, ip, hostname }");
    else {
      d.reservations.forEach((r, i) => {
        const p = ["dhcp", "reservations", i];
        const o = c.object(r, p, ["mac", "ip", "hostname"]) ?? {};
        const mac = c.mac(o.mac, [...p, "mac"]);
        const ip = c.ip(o.ip, [...p, "ip"]);
        if (!mac || !ip) c.error(p, "a reservation needs mac and ip");
        else reservations.push({ mac, ip, hostname: c.text(o.hostname, [...p, "hostname"]) });
      });
    }
  }
  const dhcp: ServeConfig["dhcp"] = {
    mode,
    port: c.int(d.port, ["dhcp", "port"], 1, 65535) ?? 67,
    proxyPort: c.int(d.proxyPort, ["dhcp", "proxyPort"], 1, 65535) ?? 4011,
    range,
    netmask: c.ip(d.netmask, ["dhcp", "netmask"]),
    router: c.ipList(d.router, ["dhcp", "router"]),
    dns: c.ipList(d.dns, ["dhcp", "dns"]),
    domain: c.string(d.domain, ["dhcp", "domain"]),
    leaseSeconds: c.int(d.leaseTime, ["dhcp", "leaseTime"], 60, 365 * 86400) ?? 3600,
    leaseFile: c.string(d.leaseFile, ["dhcp", "leaseFile"], "a string (a path)"),
    reservations,
  };
  if (mode !== "off" && !listen.interface) {
    c.error(
      ["dhcp", "mode"],
      `DHCP ${mode} mode needs listen.interface (the boot network's interface)`,
    );
  }
  if (mode === "full" && !range) c.error(["dhcp"], "full mode needs range: [first, last]");

  const t =
    c.object(
      top.tftp,
      ["tftp"],
      ["enabled", "port", "root", "firstStages", "maxBlksize", "maxWindowsize"],
    ) ?? {};
  const firstStages = host.firstStages();
  const fs =
    c.object(
      t.firstStages,
      ["tftp", "firstStages"],
      ["bios", "uefi-x86_64", "uefi-i386", "uefi-arm64", "uefi-arm32", "uefi-riscv64"],
    ) ?? {};
  for (const [key, value] of Object.entries(fs)) {
    const p = c.string(value, ["tftp", "firstStages", key], "a string (a path)");
    if (!p) continue;
    const full = resolve(baseDir, p);
    if (!host.exists(full)) c.warn(["tftp", "firstStages", key], `file ${full} does not exist`);
    firstStages[key] = full;
  }
  const tftpRoot = c.string(t.root, ["tftp", "root"], "a string (a path)");
  const tftp = {
    enabled: c.bool(t.enabled, ["tftp", "enabled"]) ?? false,
    port: c.int(t.port, ["tftp", "port"], 0, 65535) ?? 69,
    root: tftpRoot ? resolve(baseDir, tftpRoot) : undefined,
    firstStages,
    ipxeFiles: host.ipxeFiles(),
    maxBlksize: c.int(t.maxBlksize, ["tftp", "maxBlksize"], 512, 65464) ?? 65464,
    maxWindowsize: c.int(t.maxWindowsize, ["tftp", "maxWindowsize"], 1, 65535) ?? 64,
  };
  if (tftp.root && !host.exists(tftp.root))
    c.warn(["tftp", "root"], `folder ${tftp.root} does not exist`);
  if (mode !== "off" && !tftp.enabled) {
    // Plain PXE ROMs (BIOS and UEFI) load their first stage over TFTP only.
    c.warn(
      t.enabled !== undefined ? ["tftp", "enabled"] : ["dhcp", "mode"],
      `TFTP is off while DHCP (${mode}) answers PXE firmware: BIOS and UEFI PXE ROMs fetch their first stage (iPXE, shim, GRUB) over TFTP only, so they get nothing and fall through; only iPXE ROMs and UEFI HTTP Boot can boot. Set tftp: { enabled: true }`,
    );
  }

  const h = c.object(top.http, ["http"], ["port", "address", "publicUrl"]) ?? {};
  const http = {
    port: c.int(h.port, ["http", "port"], 0, 65535) ?? 8080,
    address: c.ip(h.address, ["http", "address"]) ?? "0.0.0.0",
    publicUrl: c
      .string(h.publicUrl, ["http", "publicUrl"], "a string (a URL)")
      ?.replace(/\/+$/, ""),
  };

  if (mode !== "off") reachableHttp(c, http, listen.address, host);
  return { listen, dhcp, tftp, http };
}

const isLoopback = (a: string): boolean => /^127\./.test(a) || a === "::1";

/**
 * Warnings for an HTTP side machines cannot reach: bound to loopback, or to another address
 * than the one DHCP sends them to; a publicUrl that is not this machine (checked against its
 * addresses; a name as loadConfig resolved it).
 */
function reachableHttp(
  c: Checker,
  http: Sections["http"],
  listenAddress: string | undefined,
  host: HostProbe,
): void {
  if (isLoopback(http.address))
    c.warn(
      ["http", "address"],
      `HTTP listens on ${http.address} only, while DHCP sends machines to it: they cannot reach it; set http.address: 0.0.0.0 (or the boot network's address)`,
    );
  else if (
    !http.publicUrl &&
    listenAddress &&
    http.address !== "0.0.0.0" &&
    http.address !== listenAddress
  )
    c.warn(
      ["http", "address"],
      `machines are sent to http://${listenAddress}:${http.port}, but HTTP listens on ${http.address} only; set http.address: ${listenAddress} (or 0.0.0.0)`,
    );
  if (!http.publicUrl) return;
  const where = ["http", "publicUrl"];
  let url: URL;
  try {
    url = new URL(http.publicUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(url.protocol);
  } catch {
    c.warn(where, `"${http.publicUrl}" is not an http:// URL; machines cannot fetch their plans`);
    return;
  }
  const name = url.hostname.replace(/^\[|\]$/g, "");
  const addresses = isIP(name) ? [name] : host.resolved(name);
  if (addresses === undefined) return; // not looked up (parsing without loadConfig)
  if (addresses === null) {
    c.warn(
      where,
      `${name} does not resolve from this machine (within ${RESOLVE_TIMEOUT_MS / 1000} s): machines boot only if the boot network's DNS knows it; use this server's address instead`,
    );
    return;
  }
  const local = host.localAddresses();
  if (addresses.every(isLoopback))
    c.warn(
      where,
      `${name} is this machine's loopback (${addresses.join(", ")}): machines cannot reach it; use this server's address on the boot network`,
    );
  else if (!addresses.some((a) => local.includes(a)))
    c.warn(
      where,
      `${name} is ${addresses.join(", ")}, not an address of this machine (it has ${
        local
          .filter((a) => !isLoopback(a))
          .slice(0, 4)
          .join(", ") || "none but loopback"
      }): machines would ask another host for their plans; use this server's address (unless a proxy there forwards to it)`,
    );
}

type Rest = Pick<ServeConfig, "stateDir" | "nbd" | "cacheDir" | "cacheUnpacked" | "ui">;

/** state, nbd, cache and ui. */
export function serverSections(
  c: Checker,
  top: Record<string, unknown>,
  baseDir: string,
  host: HostProbe,
): Rest {
  const state = c.string(top.state, ["state"], "a string (a path)");
  const stateDir = state ? resolve(baseDir, state) : defaultStateDir();
  const n = c.object(top.nbd, ["nbd"], ["port", "allow"]) ?? {};
  const nbd = {
    port: c.int(n.port, ["nbd", "port"], 0, 65535) ?? 10809,
    allow: c.oneOf(n.allow, ["nbd", "allow"], ["machine", "any"] as const) ?? "machine",
  };
  const cacheRaw = c.object(top.cache, ["cache"], ["dir", "unpacked"]) ?? {};
  const cacheDir = c.string(cacheRaw.dir, ["cache", "dir"], "a string (a path)");
  const cacheUnpacked = c.bool(cacheRaw.unpacked, ["cache", "unpacked"]) ?? true;
  const uiRaw =
    c.object(top.ui, ["ui"], ["write", "token", "token-file", "read-token", "read-token-file"]) ??
    {};
  const write = c.bool(uiRaw.write, ["ui", "write"]) ?? false;
  /** A secret given inline (`key`) or in a file (`key-file`), at least 12 characters. */
  const secret = (key: string, needed: boolean, why: string): string | undefined => {
    let value = c.string(uiRaw[key], ["ui", key]);
    const file = c.string(uiRaw[`${key}-file`], ["ui", `${key}-file`], "a string (a path)");
    if (file !== undefined) {
      try {
        value = host.readText(resolve(baseDir, file)).trim();
      } catch (err) {
        c.error(["ui", `${key}-file`], `cannot read ${file}: ${(err as Error).message}`);
        return undefined;
      }
    }
    if ((needed || value !== undefined) && (!value || value.length < 12)) {
      c.error(["ui", needed ? "write" : key], `${why}: a secret of at least 12 characters`);
    }
    return value;
  };
  const token = secret("token", write, "write actions need ui.token (or ui.token-file)");
  const readToken = secret("read-token", false, "ui.read-token (or ui.read-token-file) must be");
  return {
    stateDir,
    nbd,
    cacheDir: cacheDir ? resolve(baseDir, cacheDir) : join(stateDir, "cache"),
    cacheUnpacked,
    ui: { write, token: write ? token : undefined, readToken },
  };
}
