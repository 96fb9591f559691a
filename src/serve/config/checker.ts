// Walking a parsed YAML document with the document at hand, so every problem names the file,
// the line and what was expected; and the value shapes several sections share (files, hashes,
// key files). Host facts (does a file exist) come from a HostProbe, so parsing stays pure.
import { isAbsolute, resolve } from "node:path";
import type { Document, LineCounter } from "yaml";
import { formatMac, isIpv4, parseMac } from "../../dhcp/packet.ts";
import type { HostProbe } from "./host.ts";
import type { FileRef } from "./types.ts";

export type Path = (string | number)[];

/** Walks the parsed YAML with the document at hand to report lines. */
export class Checker {
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
export function hex64(c: Checker, v: unknown, path: Path): string | undefined {
  const s = c.string(v, path, "64 hex digits (a SHA-256)");
  if (s === undefined) return undefined;
  if (!/^[0-9a-f]{64}$/i.test(s)) {
    c.error(path, "expected 64 hex digits");
    return undefined;
  }
  return s.toLowerCase();
}

/** Key files (`keyring: FILE` or a list), resolved and checked to exist. */
export function keyringFiles(
  c: Checker,
  v: unknown,
  path: Path,
  baseDir: string,
  host: HostProbe,
): string[] {
  const keys = v === undefined ? [] : Array.isArray(v) ? v : [v];
  const files = keys
    .map((x, i) => c.string(x, Array.isArray(v) ? [...path, i] : path, "a public key file"))
    .filter((x) => x !== undefined)
    .map((x) => resolve(baseDir, x));
  for (const k of files) if (!host.exists(k)) c.error(path, `${k} does not exist`);
  return files;
}

/** A URL as it is, a path resolved from the configuration's folder. */
export const whereIs = (baseDir: string, x: string): string =>
  /^https?:\/\//i.test(x) ? x : resolve(baseDir, x);

/** A file to serve: a path (resolved; warned about when missing) or an http(s) URL. */
export function fileRef(
  c: Checker,
  v: unknown,
  path: Path,
  baseDir: string,
  host: HostProbe,
): FileRef | undefined {
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
  if (!host.exists(full))
    c.warn(path, `file ${full} does not exist (yet); machines booting this entry will fail`);
  return { path: full, sha256 };
}

/** `initrd:` as one file or a list of them. */
export function initrds(
  c: Checker,
  v: unknown,
  path: Path,
  baseDir: string,
  host: HostProbe,
): FileRef[] {
  const list = v === undefined ? [] : Array.isArray(v) ? v : [v];
  return list
    .map((x, i) => fileRef(c, x, Array.isArray(v) ? [...path, i] : path, baseDir, host))
    .filter((x) => x !== undefined);
}
