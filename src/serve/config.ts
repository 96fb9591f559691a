// The boot server's configuration: YAML, validated at load with errors that name the file, the
// line and what was expected. Structure errors stop the server; problems it can live with (a
// kernel file that is not there yet) are warnings, shown at start and on the dashboard.
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { isMap, LineCounter, parseDocument } from "yaml";
import type { Document } from "yaml";
import { ipToNumber, isIpv4, parseMac, formatMac } from "../dhcp/packet.ts";
import type { Reservation } from "../dhcp/leases.ts";
import { FAMILIES } from "../iso/recipes.ts";
import type { Family } from "../iso/recipes.ts";
import type { ChecksumsSpec, IsoSignatureSpec } from "../iso/signed-checksums.ts";

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

interface EntryBase {
  name: string;
  title: string;
  /** Boot this once, then the machine gets `local`. */
  once: boolean;
}

export type Entry = EntryBase &
  (
    | { kind: "kernel"; kernel: FileRef; initrd: FileRef[]; cmdline: string }
    | {
        kind: "image";
        kernel: FileRef;
        initrd: FileRef[];
        cmdline: string;
        image: ImageRef;
        /** ephemeral: a fresh overlay each boot; per-machine: one kept per MAC. */
        disk: "ephemeral" | "per-machine";
        /** Append inetboot's NBD overlay to an initramfs-tools initrd without nbd-client. */
        nbdOverlay: boolean;
      }
    | {
        kind: "iso";
        /** An http(s) URL (read by Range, cached) or a local path. */
        iso: string;
        /** Force this family's recipe instead of detecting it ("cdrom": sanboot the ISO). */
        recipe?: Family | "cdrom";
        /** Paths inside the ISO replacing the recipe's. */
        kernel?: string;
        initrd?: string[];
        /** Replaces the recipe's command line; {recipe}, {iso}, {tree}, {file:PATH} expand. */
        cmdline?: string;
        /** The whole ISO's SHA-256: checked (once) before any machine boots it. */
        sha256?: string;
        /** Or the publisher's signed checksum list that gives it. */
        checksums?: ChecksumsSpec;
        /** Or the publisher's detached signature over the whole ISO. */
        signature?: IsoSignatureSpec;
      }
    | { kind: "menu"; items: string[]; timeoutSeconds: number; defaultItem?: string }
    | { kind: "chain"; url: string }
    | { kind: "sanboot"; url: string }
    | { kind: "local" }
    | { kind: "shell" }
  );

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

export const BUILTIN_MENU = "menu";
const ENTRY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const DEFAULT_IPXE_DIRS = ["/usr/lib/ipxe", "/usr/share/ipxe"];

function defaultStateDir(): string {
  const base = process.env.INETBOOT_STATE_DIR ?? join(homedir(), ".local", "state", "inetboot");
  return join(base, "serve");
}

const IPXE_BINARIES = [
  "undionly.kpxe",
  "undionly.kkpxe",
  "ipxe.pxe",
  "ipxe.efi",
  "snponly.efi",
  "ipxe.lkrn",
];

/** Every iPXE binary in Debian's ipxe package folders, by file name (served over TFTP and HTTP). */
export function findIpxeFiles(dirs = DEFAULT_IPXE_DIRS): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of IPXE_BINARIES) {
    const found = dirs.map((d) => join(d, name)).find((p) => existsSync(p));
    if (found) out[name] = found;
  }
  return out;
}

/** Debian's ipxe package (or a configured folder): the first stage for each firmware. */
export function findFirstStages(dirs = DEFAULT_IPXE_DIRS): Record<string, string> {
  const out: Record<string, string> = {};
  const wanted: [string, string][] = [
    ["bios", "undionly.kpxe"],
    ["uefi-x86_64", "ipxe.efi"],
    ["uefi-i386", "ipxe-i386.efi"],
    ["uefi-arm64", "ipxe-arm64.efi"],
  ];
  for (const [key, file] of wanted) {
    const found = dirs.map((d) => join(d, file)).find((p) => existsSync(p));
    if (found) out[key] = found;
  }
  return out;
}

type Path = (string | number)[];

/** Walks the parsed YAML with the document at hand to report lines. */
class Checker {
  readonly problems: string[] = [];
  readonly warnings: string[] = [];
  readonly #doc: Document;
  readonly #lines: LineCounter;
  readonly #source: string;

  constructor(doc: Document, lines: LineCounter, source: string) {
    this.#doc = doc;
    this.#lines = lines;
    this.#source = source;
  }

  line(path: Path): number {
    for (let p = path; ; p = p.slice(0, -1)) {
      const node = p.length ? this.#doc.getIn(p, true) : this.#doc.contents;
      const range = (node as { range?: [number, number, number] } | null)?.range;
      if (range) return this.#lines.linePos(range[0]).line;
      if (p.length === 0) return 1;
    }
  }

  #where(path: Path): string {
    const name = path
      .map((p) => (typeof p === "number" ? `[${p}]` : `.${p}`))
      .join("")
      .slice(1);
    return `${this.#source}:${this.line(path)}: ${name || "(top level)"}`;
  }

  error(path: Path, message: string): void {
    this.problems.push(`${this.#where(path)}: ${message}`);
  }

  warn(path: Path, message: string): void {
    this.warnings.push(`${this.#where(path)}: ${message}`);
  }

  object(v: unknown, path: Path, keys: string[]): Record<string, unknown> | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "object" || Array.isArray(v)) {
      this.error(path, `expected a mapping with keys ${keys.join(", ")}`);
      return undefined;
    }
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!keys.includes(k))
        this.error([...path, k], `unknown key "${k}"; expected one of ${keys.join(", ")}`);
    }
    return o;
  }

  /**
   * A YAML string. A number or boolean is an error, never turned into a path or URL
   * (`kernel: 42` is not CONFIGDIR/42): quoting it says it is meant as text.
   */
  string(v: unknown, path: Path, what = "a string"): string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === "string" && v.length > 0) return v;
    if (typeof v === "number" || typeof v === "boolean") {
      this.error(
        path,
        `expected ${what}, got a ${typeof v} (${String(v)}); quote it if it is text`,
      );
      return undefined;
    }
    this.error(path, `expected ${what}`);
    return undefined;
  }

  /** Free text (a title, a command line, a name): a number is taken as its digits. */
  text(v: unknown, path: Path, what = "a string"): string | undefined {
    if (typeof v === "number" && Number.isFinite(v)) return String(v);
    return this.string(v, path, what);
  }

  int(v: unknown, path: Path, min: number, max: number): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max) return v;
    this.error(path, `expected a whole number from ${min} to ${max}`);
    return undefined;
  }

  bool(v: unknown, path: Path): boolean | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === "boolean") return v;
    this.error(path, "expected true or false");
    return undefined;
  }

  ip(v: unknown, path: Path): string | undefined {
    const s = this.string(v, path, "an IPv4 address");
    if (s !== undefined && !isIpv4(s)) {
      this.error(path, `"${s}" is not an IPv4 address`);
      return undefined;
    }
    return s;
  }

  ipList(v: unknown, path: Path): string[] {
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    return list
      .map((x, i) => this.ip(x, Array.isArray(v) ? [...path, i] : path))
      .filter((x) => x !== undefined);
  }

  mac(v: unknown, path: Path): string | undefined {
    const s = this.string(v, path, "a MAC address");
    if (s === undefined) return undefined;
    try {
      return formatMac(parseMac(s));
    } catch (err) {
      this.error(path, (err as Error).message);
      return undefined;
    }
  }

  oneOf<T extends string>(v: unknown, path: Path, values: readonly T[]): T | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === "string" && (values as readonly string[]).includes(v)) return v as T;
    this.error(path, `expected one of ${values.join(", ")}, got ${JSON.stringify(v)}`);
    return undefined;
  }
}

/** A SHA-256 in hex (lower-cased), or a config error. */
function hex64(c: Checker, v: unknown, path: Path): string | undefined {
  const s = c.string(v, path, "64 hex digits (a SHA-256)");
  if (s === undefined) return undefined;
  if (!/^[0-9a-f]{64}$/i.test(s)) {
    c.error(path, "expected 64 hex digits");
    return undefined;
  }
  return s.toLowerCase();
}

/** Keyring files (`keyring: FILE` or a list), resolved and checked to exist. */
function keyringFiles(c: Checker, v: unknown, path: Path, baseDir: string): string[] {
  const keys = v === undefined ? [] : Array.isArray(v) ? v : [v];
  const files = keys
    .map((x, i) => c.string(x, Array.isArray(v) ? [...path, i] : path, "a public key file"))
    .filter((x) => x !== undefined)
    .map((x) => resolve(baseDir, x));
  for (const k of files) if (!existsSync(k)) c.error(path, `${k} does not exist`);
  return files;
}

const whereIs = (baseDir: string, x: string): string =>
  /^https?:\/\//i.test(x) ? x : resolve(baseDir, x);

/** `checksums: { url, signature?, keyring, name? }`: a signed list giving the ISO's SHA-256. */
function checksumsSpec(
  c: Checker,
  v: unknown,
  path: Path,
  baseDir: string,
): ChecksumsSpec | undefined {
  if (v === undefined) return undefined;
  const o = c.object(v, path, ["url", "signature", "keyring", "name"]);
  if (!o) return undefined;
  const url = c.string(o.url, [...path, "url"], "the checksum list's URL or path");
  const signature = c.string(o.signature, [...path, "signature"], "a string (a path or URL)");
  const keyring = keyringFiles(c, o.keyring, [...path, "keyring"], baseDir);
  if (url === undefined) c.error(path, "checksums needs url: the list (SHA256SUMS, CHECKSUM)");
  if (keyring.length === 0) {
    c.error(path, "checksums needs keyring: the publisher's public key file(s) that sign it");
  }
  if (url === undefined || keyring.length === 0) return undefined;
  return {
    url: whereIs(baseDir, url),
    signature: signature === undefined ? undefined : whereIs(baseDir, signature),
    keyring,
    name: c.string(o.name, [...path, "name"]),
  };
}

/** `signature: { url, keyring }`: a detached signature over the whole ISO. */
function isoSignatureSpec(
  c: Checker,
  v: unknown,
  path: Path,
  baseDir: string,
): IsoSignatureSpec | undefined {
  if (v === undefined) return undefined;
  const o = c.object(v, path, ["url", "keyring"]);
  if (!o) return undefined;
  const url = c.string(o.url, [...path, "url"], "the signature's URL or path (ISO.sig)");
  const keyring = keyringFiles(c, o.keyring, [...path, "keyring"], baseDir);
  if (url === undefined) c.error(path, "signature needs url: the ISO's detached signature (.sig)");
  if (keyring.length === 0) {
    c.error(path, "signature needs keyring: the publisher's public key file(s)");
  }
  if (url === undefined || keyring.length === 0) return undefined;
  return { url: whereIs(baseDir, url), keyring };
}

function fileRef(c: Checker, v: unknown, path: Path, baseDir: string): FileRef | undefined {
  let location: string | undefined;
  let sha256: string | undefined;
  if (typeof v === "object" && v !== null && !Array.isArray(v)) {
    const o = c.object(v, path, ["url", "path", "sha256"]) ?? {};
    location = c.string(
      o.url ?? o.path,
      [...path, o.url !== undefined ? "url" : "path"],
      "a string (a path or URL)",
    );
    sha256 = hex64(c, o.sha256, [...path, "sha256"]);
  } else {
    location = c.string(v, path, "a string (a path or URL)");
  }
  if (location === undefined) return undefined;
  if (/^https?:\/\//i.test(location)) return { url: location, sha256 };
  if (/^[a-z]+:\/\//i.test(location)) {
    c.error(path, `"${location}": only local paths and http(s) URLs can be served`);
    return undefined;
  }
  const full = isAbsolute(location) ? location : resolve(baseDir, location);
  if (!existsSync(full))
    c.warn(path, `file ${full} does not exist (yet); machines booting this entry will fail`);
  return { path: full, sha256 };
}

/** `initrd:` as one file or a list of them. */
function initrds(c: Checker, v: unknown, path: Path, baseDir: string): FileRef[] {
  const list = v === undefined ? [] : Array.isArray(v) ? v : [v];
  return list
    .map((x, i) => fileRef(c, x, Array.isArray(v) ? [...path, i] : path, baseDir))
    .filter((x) => x !== undefined);
}

const ENTRY_KEYS = [
  "image",
  "iso",
  "sha256",
  "checksums",
  "signature",
  "recipe",
  "disk",
  "nbd-overlay",
  "title",
  "once",
  "kernel",
  "initrd",
  "cmdline",
  "menu",
  "timeout",
  "default",
  "chain",
  "sanboot",
  "local",
  "shell",
];

function entry(c: Checker, name: string, v: unknown, baseDir: string): Entry | undefined {
  const path = ["entries", name];
  if (!ENTRY_NAME.test(name)) {
    c.error(path, `entry name "${name}" must be letters, digits, "_", "." or "-" (64 at most)`);
  }
  const o = c.object(v, path, ENTRY_KEYS);
  if (!o) {
    c.error(path, "expected a mapping (kernel, menu, chain, sanboot or local)");
    return undefined;
  }
  const special = o.image !== undefined ? "image" : o.iso !== undefined ? "iso" : null;
  const kinds = (
    special ? [special] : ["kernel", "menu", "chain", "sanboot", "local", "shell"]
  ).filter((k) => o[k] !== undefined);
  if (special) {
    const others = ["image", "iso", "menu", "chain", "sanboot", "local", "shell"].filter(
      (k) => k !== special && o[k] !== undefined,
    );
    if (others.length) c.error(path, `an ${special} entry cannot also be ${others.join(" or ")}`);
  }
  if (kinds.length !== 1) {
    c.error(
      path,
      kinds.length === 0
        ? "an entry needs one of kernel, image, iso, menu, chain, sanboot or local"
        : `an entry is one kind; this one has ${kinds.join(" and ")}`,
    );
    return undefined;
  }
  for (const key of ["checksums", "signature"]) {
    if (o[key] !== undefined && kinds[0] !== "iso") {
      c.error([...path, key], `${key} is for iso entries`);
    }
  }
  const checks = ["sha256", "checksums", "signature"].filter((k) => o[k] !== undefined);
  if (kinds[0] === "iso" && checks.length > 1) {
    c.error(
      [...path, checks[1]],
      `give one of sha256, checksums or signature, not ${checks.join(" and ")}`,
    );
  }
  if (o.sha256 !== undefined && kinds[0] !== "iso") {
    c.error(
      [...path, "sha256"],
      "sha256 is for iso entries (a kernel's or initrd's goes with it: { url, sha256 })",
    );
  }
  const base = {
    name,
    title: c.text(o.title, [...path, "title"]) ?? name,
    once: c.bool(o.once, [...path, "once"]) ?? false,
  };
  switch (kinds[0]) {
    case "kernel": {
      const kernel = fileRef(c, o.kernel, [...path, "kernel"], baseDir);
      const initrd = initrds(c, o.initrd, [...path, "initrd"], baseDir);
      const cmdline = c.text(o.cmdline, [...path, "cmdline"]) ?? "";
      return kernel ? { ...base, kind: "kernel", kernel, initrd, cmdline } : undefined;
    }
    case "image": {
      const ip = [...path, "image"];
      const io = c.object(o.image, ip, ["name", "store", "trust", "insecure", "recheck"]) ?? {};
      const source = c.string(
        io.name,
        [...ip, "name"],
        "an image name (NAME, NAME@REV, NAME@sha256:…)",
      );
      const list = (v: unknown, key: string): string[] =>
        (v === undefined ? [] : Array.isArray(v) ? v : [v])
          .map((x, i) =>
            c.string(
              x,
              Array.isArray(v) ? [...ip, key, i] : [...ip, key],
              "a string (a path or URL)",
            ),
          )
          .filter((x) => x !== undefined)
          .map((x) =>
            /^[a-z]+:\/\//i.test(x) || /^RW[A-Za-z0-9+/=]{54}$/.test(x) ? x : resolve(baseDir, x),
          );
      const stores = list(io.store, "store");
      const trust = list(io.trust, "trust");
      const insecure = c.bool(io.insecure, [...ip, "insecure"]) ?? false;
      if (!source) c.error(ip, "an image needs name");
      if (stores.length === 0)
        c.error(ip, "an image needs store: a URL or folder (or a list of mirrors)");
      const unsigned = source === undefined ? null : unsignedSource(source);
      if (unsigned && trust.length > 0) {
        c.error(
          [...ip, "name"],
          `${source} is ${unsigned}: it carries no signature, so trust cannot be checked against it; name a signed release (NAME, NAME@REV, NAME@sha256:…) or drop trust and set insecure: true to serve it unchecked`,
        );
      } else if (unsigned && !insecure) {
        c.error(
          [...ip, "name"],
          `${source} is ${unsigned}: it carries no signature, so nothing vouches for it; name a signed release (NAME, NAME@REV, NAME@sha256:…) with trust: [public key files], or set insecure: true to serve it unchecked`,
        );
      } else if (trust.length === 0 && !insecure) {
        c.error(
          ip,
          "an image needs trust: [public key files] (or insecure: true to accept unsigned releases)",
        );
      }
      if (o.kernel === undefined)
        c.error(path, "an image entry needs kernel (and usually initrd) to boot it");
      const kernel = fileRef(c, o.kernel, [...path, "kernel"], baseDir);
      const initrd = initrds(c, o.initrd, [...path, "initrd"], baseDir);
      const disk =
        c.oneOf(o.disk, [...path, "disk"], ["ephemeral", "per-machine"] as const) ?? "ephemeral";
      if (!kernel || !source) return undefined;
      return {
        ...base,
        kind: "image",
        kernel,
        initrd,
        cmdline: c.text(o.cmdline, [...path, "cmdline"]) ?? "",
        image: {
          source,
          stores,
          trust,
          insecure,
          recheckSeconds: c.int(io.recheck, [...ip, "recheck"], 0, 86_400) ?? 60,
        },
        disk,
        nbdOverlay: c.bool(o["nbd-overlay"], [...path, "nbd-overlay"]) ?? false,
      };
    }
    case "iso": {
      const location = c.string(o.iso, [...path, "iso"], "an ISO's http(s) URL or file path");
      if (location === undefined) return undefined;
      const iso = /^https?:\/\//i.test(location) ? location : resolve(baseDir, location);
      if (/^[a-z]+:\/\//i.test(location) && !/^https?:/i.test(location)) {
        c.error([...path, "iso"], `"${location}": only local paths and http(s) URLs can be read`);
      } else if (!/^https?:/i.test(location) && !existsSync(iso)) {
        c.warn(
          [...path, "iso"],
          `file ${iso} does not exist (yet); machines booting this entry will fail`,
        );
      }
      const isoPath = (v: unknown, p: Path): string | undefined => {
        const s = c.string(v, p, "a path inside the ISO");
        return s === undefined ? undefined : s.startsWith("/") ? s : `/${s}`;
      };
      const initrdList =
        o.initrd === undefined ? undefined : Array.isArray(o.initrd) ? o.initrd : [o.initrd];
      return {
        ...base,
        kind: "iso",
        iso,
        recipe: c.oneOf(o.recipe, [...path, "recipe"], [...FAMILIES, "cdrom"] as const),
        kernel: isoPath(o.kernel, [...path, "kernel"]),
        initrd: initrdList
          ?.map((x, i) => isoPath(x, [...path, "initrd", i]))
          .filter((x) => x !== undefined),
        cmdline: c.text(o.cmdline, [...path, "cmdline"]),
        sha256: hex64(c, o.sha256, [...path, "sha256"]),
        checksums: checksumsSpec(c, o.checksums, [...path, "checksums"], baseDir),
        signature: isoSignatureSpec(c, o.signature, [...path, "signature"], baseDir),
      };
    }
    case "menu": {
      if (!Array.isArray(o.menu) || o.menu.length === 0) {
        c.error([...path, "menu"], "expected a list of entry names");
        return undefined;
      }
      const items = o.menu
        .map((x, i) => c.text(x, [...path, "menu", i], "an entry name"))
        .filter((x) => x !== undefined);
      return {
        ...base,
        kind: "menu",
        items,
        timeoutSeconds: c.int(o.timeout, [...path, "timeout"], 0, 3600) ?? 10,
        defaultItem: c.text(o.default, [...path, "default"], "an entry name"),
      };
    }
    case "chain":
    case "sanboot": {
      const url = c.string(o[kinds[0]], [...path, kinds[0]], "a string (a URL)");
      return url ? { ...base, kind: kinds[0], url } : undefined;
    }
    case "local":
      return { ...base, kind: "local" };
    default:
      return { ...base, kind: "shell" };
  }
}

/**
 * What an image source is when it cannot carry a signature: a bare .caibx index, or a plain
 * image URL (served as it is); null for a release (NAME…, a release .json).
 */
function unsignedSource(source: string): string | null {
  if (/\.caibx$/i.test(source)) return "a bare index (.caibx)";
  if (/^[a-z]+:\/\//i.test(source) && !/\.json$/i.test(source)) return "a plain image URL";
  return null;
}

function builtinEntries(): [string, Entry][] {
  return [
    ["local", { name: "local", title: "Boot from the local disk", once: false, kind: "local" }],
    ["shell", { name: "shell", title: "iPXE shell", once: false, kind: "shell" }],
  ];
}

/** Parses and validates a configuration. `text` null means the built-in defaults. */
export function parseConfig(text: string | null, source: string): ServeConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text ?? "{}", {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
  });
  if (doc.errors.length) {
    throw new ConfigError(
      source,
      doc.errors.map(
        (e) => `${source}:${lines.linePos(e.pos[0]).line}: ${e.message.split("\n")[0]}`,
      ),
    );
  }
  if (doc.contents !== null && !isMap(doc.contents)) {
    throw new ConfigError(source, [`${source}:1: expected a mapping at the top level`]);
  }
  const c = new Checker(doc, lines, source);
  const raw = (doc.toJS() ?? {}) as unknown;
  const top =
    c.object(
      raw,
      [],
      [
        "listen",
        "dhcp",
        "tftp",
        "http",
        "nbd",
        "cache",
        "state",
        "ui",
        "entries",
        "machines",
        "default",
      ],
    ) ?? {};
  const baseDir = text === null ? process.cwd() : dirname(resolve(source));

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
  const firstStages = findFirstStages();
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
    if (!existsSync(full)) c.warn(["tftp", "firstStages", key], `file ${full} does not exist`);
    firstStages[key] = full;
  }
  const tftpRoot = c.string(t.root, ["tftp", "root"], "a string (a path)");
  const tftp = {
    enabled: c.bool(t.enabled, ["tftp", "enabled"]) ?? false,
    port: c.int(t.port, ["tftp", "port"], 1, 65535) ?? 69,
    root: tftpRoot ? resolve(baseDir, tftpRoot) : undefined,
    firstStages,
    ipxeFiles: findIpxeFiles(),
    maxBlksize: c.int(t.maxBlksize, ["tftp", "maxBlksize"], 512, 65464) ?? 65464,
    maxWindowsize: c.int(t.maxWindowsize, ["tftp", "maxWindowsize"], 1, 65535) ?? 64,
  };
  if (tftp.root && !existsSync(tftp.root))
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

  const entries = new Map<string, Entry>(builtinEntries());
  const rawEntries =
    c.object(top.entries, ["entries"], Object.keys((top.entries as object | null) ?? {})) ?? {};
  for (const [name, v] of Object.entries(rawEntries)) {
    const e = entry(c, name, v, baseDir);
    if (e) entries.set(name, e);
  }
  if (!entries.has(BUILTIN_MENU)) {
    const items = [...entries.keys()].filter((n) => n !== "local" && n !== "shell");
    entries.set(BUILTIN_MENU, {
      name: BUILTIN_MENU,
      title: "inetboot",
      once: false,
      kind: "menu",
      items: [...items, "local", "shell"],
      timeoutSeconds: 10,
      defaultItem: items[0] ?? "local",
    });
  }
  for (const e of entries.values()) {
    if (e.kind !== "menu") continue;
    e.items.forEach((item, i) => {
      if (!entries.has(item)) c.error(["entries", e.name, "menu", i], `no entry named "${item}"`);
    });
    if (e.defaultItem && !e.items.includes(e.defaultItem)) {
      c.error(["entries", e.name, "default"], `"${e.defaultItem}" is not one of this menu's items`);
    }
  }

  const machines: MatchRule[] = [];
  if (top.machines !== undefined && top.machines !== null) {
    if (!Array.isArray(top.machines)) c.error(["machines"], "expected a list of { match, boot }");
    else {
      top.machines.forEach((m, i) => {
        const p = ["machines", i];
        const o = c.object(m, p, ["name", "match", "boot"]) ?? {};
        const mt =
          c.object(o.match, [...p, "match"], ["mac", "uuid", "arch", "hostname", "labels"]) ?? {};
        const match: MatchRule["match"] = {
          mac: c.mac(mt.mac, [...p, "match", "mac"]),
          uuid: c.string(mt.uuid, [...p, "match", "uuid"])?.toLowerCase(),
          arch: c.string(mt.arch, [...p, "match", "arch"]),
          hostname: c.text(mt.hostname, [...p, "match", "hostname"]),
        };
        if (mt.labels !== undefined) {
          const l =
            c.object(mt.labels, [...p, "match", "labels"], Object.keys(mt.labels ?? {})) ?? {};
          match.labels = Object.fromEntries(Object.entries(l).map(([k, v]) => [k, String(v)]));
        }
        const boot = c.text(o.boot, [...p, "boot"], "an entry name");
        if (!boot) c.error(p, "a machine rule needs boot: ENTRY");
        else if (!entries.has(boot)) c.error([...p, "boot"], `no entry named "${boot}"`);
        if (Object.values(match).every((x) => x === undefined)) {
          c.error(
            [...p, "match"],
            "a rule needs at least one of mac, uuid, arch, hostname, labels",
          );
        }
        if (boot)
          machines.push({
            name: c.text(o.name, [...p, "name"]) ?? `machines[${i}]`,
            line: c.line(p),
            match,
            boot,
          });
      });
    }
  }
  const def = c.text(top.default, ["default"], "an entry name") ?? BUILTIN_MENU;
  if (!entries.has(def)) c.error(["default"], `no entry named "${def}"`);

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
        value = readFileSync(resolve(baseDir, file), "utf8").trim();
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
  if (c.problems.length) throw new ConfigError(source, c.problems);
  return {
    source,
    listen,
    dhcp,
    tftp,
    http,
    stateDir,
    nbd,
    cacheDir: cacheDir ? resolve(baseDir, cacheDir) : join(stateDir, "cache"),
    ui: { write, token: write ? token : undefined, readToken },
    entries,
    machines,
    default: def,
    warnings: c.warnings,
  };
}

export async function loadConfig(file: string | null): Promise<ServeConfig> {
  if (file === null) return parseConfig(null, "(built-in defaults)");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ConfigError(file, [`cannot read the configuration: ${(err as Error).message}`]);
  }
  return parseConfig(text, file);
}
