// One interface for every kind of boot entry, as pixiecore has one Booter: a kind parses its
// part of the configuration, turns (entry, machine) into a boot plan as data, serves the files
// its plans name, and says in a line what it boots. Adding a kind is a file implementing this
// plus one line in entries/index.ts.
import type { BootPlan } from "../boot-plan.ts";
import type { Checker, Path } from "../config/checker.ts";
import type { HostProbe } from "../config/host.ts";
import type { MachineFiles } from "../config/machine-files.ts";
import type { EventInput } from "../events.ts";
import type { LiveIso } from "../../iso/live-iso.ts";
import type { Html } from "../ui/html.ts";
import type { ExtractedBoot } from "../image-boot-files.ts";

/** What every entry has, whatever its kind. */
export interface EntryBase {
  name: string;
  title: string;
  /** Boot this once, then the machine gets `local`. */
  once: boolean;
  /** Per-machine files from templates (cloud-init, files:). */
  machineFiles?: MachineFiles;
}

/** Where a kind's parser is in the configuration. */
export interface ParseContext {
  path: Path;
  /** The configuration file's folder (relative paths resolve from it). */
  baseDir: string;
  host: HostProbe;
}

/** What image entries need of the server's NBD exports (image-exports.ts). */
export interface DiskExports {
  /** A per-boot export of the machine's disk; its name. */
  prepare(entry: EntryBase & { kind: "image" }, mac: string, address: string): Promise<string>;
  /** The release a machine's disk keeps it on, when not the entry's current one. */
  staysOn(entry: string, mac: string): string | null;
  /** What the machine's disk boots, read from the image (an entry without kernel:). */
  boot(entry: EntryBase & { kind: "image" }, mac: string): Promise<ExtractedBoot>;
  /** The identity of the machine's disk (cloud-init's instance-id), once it has one. */
  diskId(entry: EntryBase & { kind: "image" }, mac: string): string | null;
}

/** What ISO entries need of the server's open ISOs (iso-entries.ts). */
export interface LiveIsos {
  open(entry: EntryBase & { kind: "iso" }): Promise<LiveIso>;
  /** The ISO if it opens within `ms`, else null (still being checked). */
  within(entry: EntryBase & { kind: "iso" }, ms: number): Promise<LiveIso | null>;
  waitMessage(entry: EntryBase & { kind: "iso" }): string;
  /** How a machine boots it lazily (its NBD export, the initrd overlay), or null: download. */
  lazy(
    entry: EntryBase & { kind: "iso"; lazy: boolean },
    live: LiveIso,
  ): Promise<{ exportName: string; hook: string | null; overlay: string | null } | null>;
}

/** The server's parts a plan may use, and what it knows of the asking machine. */
export interface PlanContext {
  /** The base URL the machine reached us at ("http://10.0.0.1:8080"). */
  base: string;
  /** The query (without "?") that identifies the machine to the URLs in its plan. */
  query: string;
  mac?: string;
  ip: string;
  /** The machine's CPU as its boot loader reports it ("x86_64", "arm64"), if it does. */
  cpu?: string;
  /** The URL of the request (for plans that ask again). */
  url: URL;
  titleOf(name: string): string;
  images: DiskExports | null;
  isos: LiveIsos;
  /** The NBD server's address and port, for root command lines. */
  nbd: { host: string; port: number };
  record(input: EventInput): void;
}

/** A file an entry serves at /files/ENTRY/kernel or /files/ENTRY/initrd/N. */
export interface EntryFile {
  /** A local file to send. */
  path: string;
  etag?: string;
  /** What it is, for events ("URL", "ISO:/casper/vmlinuz"). */
  label: string;
}

export interface FileContext {
  /** Local copy of a configured file (a URL is fetched once and cached, hash-checked). */
  local(ref: {
    path?: string;
    url?: string;
    sha256?: string;
  }): Promise<{ path: string; etag?: string }>;
  isos: LiveIsos;
  /** The NBD overlay initrd built at start, when an image entry asks for it. */
  nbdOverlay: string | null;
  /** The asking machine, and the disks (an image entry's kernel from its image). */
  mac?: string;
  images: DiskExports | null;
}

export interface EntryKind<E extends EntryBase & { kind: string }> {
  kind: E["kind"];
  /** The configuration keys of this kind; the first one makes an entry this kind. */
  keys: readonly string[];
  parse(c: Checker, o: Record<string, unknown>, base: EntryBase, ctx: ParseContext): E | undefined;
  plan(entry: E, ctx: PlanContext): BootPlan | Promise<BootPlan>;
  /** The kernel (initrd -1) or an initrd; null when the entry has no such file. */
  file?(entry: E, initrd: number, ctx: FileContext): Promise<EntryFile | null>;
  /** What it boots, for the catalog page. */
  describe(entry: E): Html | string;
}

/** A kernel plan for an entry whose kernel and `initrds` initrds it serves at /files/ENTRY/…. */
export function kernelPlan(
  ctx: Pick<PlanContext, "base" | "query">,
  entry: EntryBase,
  boot: { initrds: number; cmdline: string },
): BootPlan {
  const q = ctx.query ? `?${ctx.query}` : "";
  const files = `${ctx.base}/files/${encodeURIComponent(entry.name)}`;
  return {
    kind: "kernel",
    title: entry.title,
    entry: entry.name,
    kernel: `${files}/kernel${q}`,
    initrds: Array.from({ length: boot.initrds }, (_, i) => `${files}/initrd/${i}${q}`),
    cmdline: boot.cmdline,
  };
}
