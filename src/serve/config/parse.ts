// Parsing a configuration: YAML in, a checked ServeConfig out, with errors that name the file,
// the line and what was expected. Structure errors throw ConfigError; problems the server can
// live with (a kernel file not there yet) are warnings. Pure but for the HostProbe it is given.
import { lookup } from "node:dns/promises";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import { isMap, LineCounter, parseDocument } from "yaml";
import { ENTRY_KINDS } from "../entries/index.ts";
import type { Entry } from "../entries/index.ts";
import type { ParseContext } from "../entries/kind.ts";
import { Checker } from "./checker.ts";
import { DEFAULT_IPXE_DIRS, probeHost, RESOLVE_TIMEOUT_MS } from "./host.ts";
import type { HostProbe } from "./host.ts";
import { loaderMissing, loaderSection, LOADERS } from "./loaders.ts";
import { networkSections, serverSections } from "./sections.ts";
import { parseMachineFiles } from "./machine-files.ts";
import { BUILTIN_MENU, ConfigError } from "./types.ts";
import type { MatchRule } from "./types.ts";
import type { ServeConfig } from "./serve-config.ts";

/** A host name a rule gives its machines (RFC 1123 labels). */
function hostnameOf(c: Checker, v: string, path: (string | number)[]): string {
  if (
    !/^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(
      v,
    )
  )
    c.error(path, `"${v}" is not a host name (letters, digits and "-" in dot-separated labels)`);
  return v;
}

const ENTRY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const COMMON_KEYS = ["title", "once", "cloud-init", "files"];
/** Kinds whose plans boot a kernel with a command line (per-machine files reach it there). */
const FILE_KINDS = ["kernel", "image", "iso"];
const ENTRY_KEYS = [...new Set([...COMMON_KEYS, ...ENTRY_KINDS.flatMap((k) => k.keys)])];

/**
 * One entry: its kind is the one whose first key it has (an image or ISO entry's `kernel` is
 * part of it, not a kernel entry); keys of other kinds are errors that say whose they are.
 */
function entry(
  c: Checker,
  name: string,
  v: unknown,
  ctx: Omit<ParseContext, "path">,
): Entry | undefined {
  const path = ["entries", name];
  if (!ENTRY_NAME.test(name)) {
    c.error(path, `entry name "${name}" must be letters, digits, "_", "." or "-" (64 at most)`);
  }
  const o = c.object(v, path, ENTRY_KEYS);
  const defining = ENTRY_KINDS.map((k) => k.keys[0]);
  if (!o) {
    c.error(path, `expected a mapping (${defining.join(", ")})`);
    return undefined;
  }
  const present = ENTRY_KINDS.filter((k) => o[k.keys[0]] !== undefined);
  const kinds = present.filter(
    (k) => !present.some((other) => other !== k && other.keys.includes(k.keys[0])),
  );
  if (kinds.length !== 1) {
    c.error(
      path,
      kinds.length === 0
        ? `an entry needs one of ${defining.join(", ")}`
        : `an entry is one kind; this one has ${kinds.map((k) => k.kind).join(" and ")}`,
    );
    return undefined;
  }
  const kind = kinds[0];
  for (const key of Object.keys(o)) {
    if (COMMON_KEYS.includes(key) || kind.keys.includes(key)) continue;
    const owners = ENTRY_KINDS.filter((k) => k.keys.includes(key)).map((k) => k.kind);
    if (owners.length) c.error([...path, key], `${key} is for ${owners.join(" and ")} entries`);
  }
  for (const key of ["cloud-init", "files"]) {
    if (o[key] !== undefined && !FILE_KINDS.includes(kind.kind))
      c.error(
        [...path, key],
        `${key} is for ${FILE_KINDS.join(", ")} entries (its URLs go on the kernel command line)`,
      );
  }
  const machineFiles = parseMachineFiles(c, o, path, ctx.baseDir);
  const base = {
    name,
    title: c.text(o.title, [...path, "title"]) ?? name,
    once: c.bool(o.once, [...path, "once"]) ?? false,
    ...(machineFiles ? { machineFiles } : {}),
  };
  return (kind.parse as (...a: unknown[]) => Entry | undefined)(c, o, base, { ...ctx, path });
}

/**
 * An image entry with `kernel:` boots its root over NBD only through an initrd that can attach
 * it: none at all never can. Whether a given initrd has nbd-client is not known here (reading
 * it takes seconds): `inetboot doctor` looks inside local ones.
 */
function imageRootWarnings(c: Checker, e: Extract<Entry, { kind: "image" }>): void {
  if (!e.kernel || e.initrd.length > 0) return;
  const path = ["entries", e.name, "kernel"];
  c.warn(
    path,
    e.nbdOverlay === true
      ? "nbd-overlay: true adds to an initramfs-tools initrd, and this entry has none: the kernel cannot mount its NBD root; give initrd: (Debian's or Ubuntu's initrd.img)"
      : "no initrd: a kernel alone cannot mount its root over NBD (root=/dev/nbd0 needs nbd-client in an initramfs); give initrd: with nbd-client installed (Debian: apt install nbd-client), or an initramfs-tools initrd with nbd-overlay: true",
  );
}

function builtinEntries(): [string, Entry][] {
  return [
    ["local", { name: "local", title: "Boot from the local disk", once: false, kind: "local" }],
    ["shell", { name: "shell", title: "iPXE shell", once: false, kind: "shell" }],
  ];
}

/** Parses and validates a configuration. `text` null means the built-in defaults. */
export function parseConfig(
  text: string | null,
  source: string,
  host: HostProbe = probeHost(),
): ServeConfig {
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
        "loaders",
      ],
    ) ?? {};
  const baseDir = text === null ? process.cwd() : dirname(resolve(source));
  const network = networkSections(c, top, baseDir, host);

  const entries = new Map<string, Entry>(builtinEntries());
  const rawEntries =
    c.object(top.entries, ["entries"], Object.keys((top.entries as object | null) ?? {})) ?? {};
  for (const [name, v] of Object.entries(rawEntries)) {
    const e = entry(c, name, v, { baseDir, host });
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

  const loaders = loaderSection(c, top.loaders, baseDir, host, network.tftp.firstStages);
  if (network.dhcp.mode !== "off" && network.tftp.enabled) {
    // Plain PXE machines whose firmware gets iPXE by default need its first stage.
    const missing = ["bios", "uefi-x86_64"].filter(
      (k) => loaders.defaults[k] === "ipxe" && !network.tftp.firstStages[k],
    );
    if (missing.length)
      c.warn(
        ["tftp"],
        `no iPXE first stage for ${missing.join(" and ")} (looked in ${DEFAULT_IPXE_DIRS.join(" and ")}): those PXE machines get no boot file; apt install ipxe, or set tftp.firstStages.${missing[0]}: FILE`,
      );
  }
  for (const e of entries.values()) if (e.kind === "image") imageRootWarnings(c, e);
  const machines: MatchRule[] = [];
  if (top.machines !== undefined && top.machines !== null) {
    if (!Array.isArray(top.machines)) c.error(["machines"], "expected a list of { match, boot }");
    else {
      top.machines.forEach((m, i) => {
        const p = ["machines", i];
        const o = c.object(m, p, ["name", "match", "boot", "loader", "hostname"]) ?? {};
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
        const loader = c.oneOf(o.loader, [...p, "loader"], LOADERS);
        // A rule for one CPU is checked against it; without one, some GRUB must exist at all.
        const cpu = /(x86_64|arm64)$/.exec(match.arch ?? "")?.[1];
        const missing = loader && loaderMissing(loaders, loader, cpu ?? "x86_64");
        if (missing && (cpu || !Object.keys(loaders.grub).length))
          c.error([...p, "loader"], missing);
        if (boot)
          machines.push({
            name: c.text(o.name, [...p, "name"]) ?? `machines[${i}]`,
            line: c.line(p),
            match,
            boot,
            ...(loader ? { loader } : {}),
            ...(typeof o.hostname === "string"
              ? { hostname: hostnameOf(c, o.hostname, [...p, "hostname"]) }
              : {}),
          });
      });
    }
  }
  const def = c.text(top.default, ["default"], "an entry name") ?? BUILTIN_MENU;
  if (!entries.has(def)) c.error(["default"], `no entry named "${def}"`);

  const rest = serverSections(c, top, baseDir, host);
  if (c.problems.length) throw new ConfigError(source, c.problems);
  return {
    ...{ source, ...network, ...rest, entries, machines, loaders },
    ...{ default: def, warnings: c.warnings },
  };
}

/** Every address `name` resolves to, or null when it does not within RESOLVE_TIMEOUT_MS. */
async function lookupAll(name: string): Promise<string[] | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((r) => (timer = setTimeout(() => r(null), RESOLVE_TIMEOUT_MS)));
  const found = lookup(name, { all: true }).then(
    (list) => list.map((a) => a.address),
    () => null,
  );
  try {
    return await Promise.race([found, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** http.publicUrl's host name resolved ahead of parsing (which never waits), when it has one. */
async function resolveNames(text: string): Promise<Map<string, string[] | null>> {
  const out = new Map<string, string[] | null>();
  let host: string;
  try {
    const raw = parseDocument(text).toJS() as { http?: { publicUrl?: unknown } } | null;
    if (typeof raw?.http?.publicUrl !== "string") return out;
    host = new URL(raw.http.publicUrl).hostname;
  } catch {
    return out; // parsing says what is wrong
  }
  if (host && !isIP(host.replace(/^\[|\]$/g, ""))) out.set(host, await lookupAll(host));
  return out;
}

export async function loadConfig(file: string | null): Promise<ServeConfig> {
  if (file === null) return parseConfig(null, "(built-in defaults)");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ConfigError(file, [`cannot read the configuration: ${(err as Error).message}`]);
  }
  const resolved = await resolveNames(text);
  return parseConfig(text, file, probeHost(undefined, { resolved }));
}
