// What an installed system boots by default, from its own boot configuration: GRUB's grub.cfg
// as update-grub/grub2-mkconfig write it (the default entry: `set default=` as a number, an id
// or a title, "saved" read from grubenv; submenus as "N>M"), or Boot Loader Specification
// entries (/boot/loader/entries/*.conf: Fedora, RHEL, systemd-boot), the newest version first.
// Text from an image: sizes and counts are bounded and nothing in it is run; `$variables` GRUB
// would expand are dropped from the command line.

/** grub.cfg read at most (Debian's is ~10 KiB with a few kernels). */
export const MAX_CONFIG = 1024 * 1024;
/** Menu entries taken from one grub.cfg, and BLS entry files read. */
export const MAX_ENTRIES = 256;

export interface BootChoice {
  /** The kernel's path as the loader names it (relative to the filesystem the config is on). */
  kernel: string;
  initrds: string[];
  /** Its arguments, `$variables` dropped. */
  cmdline: string;
  /** Where it came from: "grub.cfg 'Debian GNU/Linux'", "BLS fedora-6.5.conf". */
  from: string;
}

interface MenuEntry {
  title: string;
  id?: string;
  linux?: string[];
  initrd?: string[];
  /** Entries of a submenu. */
  children?: MenuEntry[];
}

/** Splits a line into words as GRUB's shell does (quotes, backslashes). */
export function grubWords(line: string): string[] {
  const words: string[] = [];
  let word = "";
  let has = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      word += line.slice(i + 1, end < 0 ? line.length : end);
      i = end < 0 ? line.length : end;
      has = true;
    } else if (ch === '"') {
      let j = i + 1;
      for (; j < line.length && line[j] !== '"'; j++) {
        if (line[j] === "\\" && j + 1 < line.length) j++;
        word += line[j];
      }
      i = j;
      has = true;
    } else if (ch === "\\" && i + 1 < line.length) {
      word += line[++i];
      has = true;
    } else if (ch === " " || ch === "\t") {
      if (has) words.push(word);
      word = "";
      has = false;
    } else if (ch === "#" && !has) {
      break;
    } else {
      word += ch;
      has = true;
    }
  }
  if (has) words.push(word);
  return words;
}

/** The menu entries of a grub.cfg (submenus as entries with children), and `set default`. */
function parseMenu(text: string): { entries: MenuEntry[]; defaultEntry?: string } {
  const root: MenuEntry[] = [];
  const stack: { entry?: MenuEntry; list: MenuEntry[] }[] = [{ list: root }];
  let count = 0;
  let defaultEntry: string | undefined;
  for (const raw of text.split("\n")) {
    const words = grubWords(raw.trim());
    if (words.length === 0) continue;
    const top = stack[stack.length - 1];
    const head = words[0];
    if ((head === "menuentry" || head === "submenu") && words.at(-1) === "{") {
      if (++count > MAX_ENTRIES) break;
      const idAt = words.indexOf("$menuentry_id_option");
      const entry: MenuEntry = {
        title: words[1] ?? "",
        id:
          idAt > 0
            ? words[idAt + 1]
            : words.includes("--id")
              ? words[words.indexOf("--id") + 1]
              : undefined,
        children: head === "submenu" ? [] : undefined,
      };
      top.list.push(entry);
      stack.push({ entry, list: entry.children ?? [] });
      if (stack.length > 8) break;
    } else if (head === "}") {
      if (stack.length > 1) stack.pop();
    } else if (
      top.entry &&
      !top.entry.children &&
      (head === "linux" || head === "linuxefi" || head === "linux16")
    ) {
      top.entry.linux = words.slice(1);
    } else if (
      top.entry &&
      !top.entry.children &&
      (head === "initrd" || head === "initrdefi" || head === "initrd16")
    ) {
      top.entry.initrd = words.slice(1);
    } else if (stack.length === 1 && head === "set" && words[1]?.startsWith("default=")) {
      defaultEntry = words[1].slice("default=".length);
    }
  }
  return { entries: root, defaultEntry };
}

/** The entry `spec` names ("0", "1>2", an id, a title, "id>id"), or the first one. */
function pick(entries: MenuEntry[], spec: string | undefined): MenuEntry | undefined {
  let list = entries;
  let found: MenuEntry | undefined;
  for (const part of (spec ?? "0").split(">")) {
    const n = /^\d+$/.test(part) ? Number(part) : -1;
    found = n >= 0 ? list[n] : list.find((e) => e.id === part || e.title === part);
    if (!found) return undefined;
    list = found.children ?? [];
  }
  // A submenu named as the default boots its first entry.
  while (found?.children) found = found.children[0];
  return found;
}

/** The first entry that boots a kernel, depth first. */
function firstKernel(entries: MenuEntry[]): MenuEntry | undefined {
  for (const e of entries) {
    const k = e.children ? firstKernel(e.children) : e.linux ? e : undefined;
    if (k) return k;
  }
  return undefined;
}

/** Arguments without the ones GRUB would expand from variables. */
const plainArgs = (args: string[]): string => args.filter((a) => !a.includes("$")).join(" ");

/** `saved_entry=` of a grubenv block. */
export function savedEntry(grubenv: string): string | undefined {
  return /^saved_entry=(.*)$/m.exec(grubenv)?.[1]?.trim() || undefined;
}

/** The default kernel of a grub.cfg, or null when it boots no Linux kernel. */
export function grubDefault(text: string, grubenv = ""): BootChoice | null {
  if (text.length > MAX_CONFIG) throw new Error(`grub.cfg is over ${MAX_CONFIG} bytes`);
  const { entries, defaultEntry } = parseMenu(text);
  const spec =
    defaultEntry === "saved" || defaultEntry === "${saved_entry}"
      ? savedEntry(grubenv)
      : defaultEntry;
  const chosen = [pick(entries, spec), firstKernel(entries)].find((e) => e?.linux?.length);
  if (!chosen?.linux) return null;
  const [kernel, ...args] = chosen.linux;
  return {
    kernel,
    initrds: (chosen.initrd ?? []).filter((p) => !p.includes("$")),
    cmdline: plainArgs(args),
    from: `grub.cfg '${chosen.title}'`,
  };
}

/** Compares version strings by their numbers ("6.10" after "6.9"). */
export function versionCompare(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

/**
 * The BLS entry to boot among `files` (name → content): the newest `version` (or file name),
 * with `options` (and a `$kernelopts` taken from grubenv when given).
 */
export function blsDefault(files: Map<string, string>, grubenv = ""): BootChoice | null {
  const entries: { name: string; keys: Map<string, string[]> }[] = [];
  for (const [name, text] of [...files].slice(0, MAX_ENTRIES)) {
    const keys = new Map<string, string[]>();
    for (const line of text.slice(0, 65536).split("\n")) {
      const m = /^\s*([a-z_-]+)\s+(.*?)\s*$/.exec(line);
      if (m) keys.set(m[1], [...(keys.get(m[1]) ?? []), m[2]]);
    }
    if (keys.get("linux")?.[0]) entries.push({ name, keys });
  }
  const version = (e: (typeof entries)[number]): string => e.keys.get("version")?.[0] ?? e.name;
  entries.sort((a, b) => versionCompare(version(b), version(a)));
  // grubenv's saved_entry names an entry by its file name (Fedora and RHEL pin it so).
  const saved = savedEntry(grubenv);
  const e = entries.find((x) => saved && x.name === `${saved}.conf`) ?? entries[0];
  if (!e) return null;
  const kernelopts = /^kernelopts=(.*)$/m.exec(grubenv)?.[1] ?? "";
  const options = (e.keys.get("options") ?? []).join(" ").replace(/\$kernelopts\b/g, kernelopts);
  return {
    kernel: e.keys.get("linux")![0],
    initrds: (e.keys.get("initrd") ?? []).flatMap((l) => l.split(/\s+/)).filter(Boolean),
    cmdline: plainArgs(options.split(/\s+/).filter(Boolean)),
    from: `BLS ${e.name}`,
  };
}

/** The value of `key=` in a command line ("root" → "UUID=…"), the last one winning. */
export function cmdlineValue(cmdline: string, key: string): string | undefined {
  let value: string | undefined;
  for (const w of cmdline.split(/\s+/))
    if (w.startsWith(`${key}=`)) value = w.slice(key.length + 1);
  return value;
}

/** A command line without the arguments named (`root`, `BOOT_IMAGE`, …). */
export function withoutArgs(cmdline: string, keys: string[]): string {
  return cmdline
    .split(/\s+/)
    .filter((w) => w && !keys.some((k) => w === k || w.startsWith(`${k}=`)))
    .join(" ");
}
