// The sections of the configuration besides entries and machines: where the server listens,
// DHCP, TFTP, HTTP, NBD, cache and state folders, the dashboard's tokens.
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { ipToNumber } from "../../dhcp/packet.ts";
import type { Reservation } from "../../dhcp/leases.ts";
import type { Checker } from "./checker.ts";
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
  if (mode !== "off" && !tftp.enabled && !firstStages.bios) {
    c.warn(
      ["tftp"],
      "TFTP is off: only iPXE and UEFI HTTP Boot clients can boot (plain PXE needs tftp.enabled)",
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

  return { listen, dhcp, tftp, http };
}

type Rest = Pick<ServeConfig, "stateDir" | "nbd" | "cacheDir" | "ui">;

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
  const cacheRaw = c.object(top.cache, ["cache"], ["dir"]) ?? {};
  const cacheDir = c.string(cacheRaw.dir, ["cache", "dir"], "a string (a path)");
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
    ui: { write, token: write ? token : undefined, readToken },
  };
}
