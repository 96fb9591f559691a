// Image entries' disks: each boot of a machine gets an export of its own (a per-boot ticket,
// export-tickets.ts) over the entry's release (image-releases.ts), through a copy-on-write
// overlay: fresh every boot (`ephemeral`) or kept per MAC across boots (`per-machine`), opened
// when a client first uses it. Exported through an ExportTarget (today the NBD server; an
// iSCSI or other block front end can stand beside it).
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { BlockDevice } from "../block/block-device.ts";
import { CowDevice } from "../block/cow-device.ts";
import { LazyDevice } from "../block/lazy-device.ts";
import { BorrowedDevice } from "../block/borrowed-device.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import type { NbdExport } from "../nbd/server.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import type { Entry } from "./config.ts";
import { ExportTickets } from "./export-tickets.ts";
import type { Ticket } from "./export-tickets.ts";

type ImageEntry = Extract<Entry, { kind: "image" }>;

/** Connections one boot's export takes (the kernel's client uses one; multi-conn a few). */
export const MAX_CONNECTIONS_PER_BOOT = 8;
/** How often tickets nobody connected to are looked for and dropped. */
const SWEEP_MS = 15_000;

import { ImageBootFiles } from "./image-boot-files.ts";
import type { ExtractedBoot } from "./image-boot-files.ts";
import { ImageReleases } from "./image-releases.ts";
import type { Base, DiskOrigin } from "./image-releases.ts";

/** What the exports need of a block front end (the NBD server implements it). */
export interface ExportTarget {
  /** Adds or replaces an export; connections already attached keep their device. */
  setExport(e: NbdExport): void;
  removeExport(name: string): void;
  /** Connections using the export of that name now. */
  clientsOf(name: string): number;
}

export interface ImageExportsOptions {
  nbd: ExportTarget;
  /** Each chunk fetch from a mirror, timed (metrics). */
  onFetch?: (seconds: number, mirror: string, ok: boolean) => void;
  /** An entry moved to a newer release while the server runs (metrics). */
  onNewRelease?: (entry: string) => void;
  stateDir: string;
  cacheDir: string;
  /** Keep images' chunks uncompressed in the cache too (default: yes). */
  cacheUnpacked?: boolean;
  /** machine: each export opens only for the address that asked for its plan (default). */
  allow?: "machine" | "any";
  /** The image entries (their disk kinds). */
  entries?: ImageEntry[];
  /** How long an export waits for its machine (DEFAULT_TICKET_TTL_MS). */
  ticketTtlMs?: number;
  logger?: Logger;
}

/** "::ffff:10.0.0.5" and "10.0.0.5" are one client. */
function plainAddress(address: string | undefined): string | undefined {
  return address?.replace(/^::ffff:/, "");
}

export class ImageExports {
  readonly #o: ImageExportsOptions;
  readonly #log: Logger;
  readonly #releases: ImageReleases;
  /** Per-boot export names, their owners and expiry. */
  readonly #tickets: ExportTickets;
  /** Ticket name → its export's device (opened on first use). */
  readonly #exports = new Map<
    string,
    { device: LazyDevice; entry: string; mac: string; base: Base }
  >();
  /** ENTRY-MAC → a per-machine disk, open while a ticket of the machine exists. */
  readonly #disks = new Map<string, { base: Base; device: Promise<CowDevice> }>();
  /** Entry → its disk kind. */
  readonly #kinds = new Map<string, "ephemeral" | "per-machine">();
  readonly #sweep: NodeJS.Timeout;
  readonly #bootFiles: ImageBootFiles;
  constructor(options: ImageExportsOptions) {
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
    this.#bootFiles = new ImageBootFiles(options.cacheDir, this.#log);
    this.#releases = new ImageReleases({ ...options, logger: this.#log });
    this.#tickets = new ExportTickets({
      clientsOf: (name) => options.nbd.clientsOf(name),
      ttlMs: options.ticketTtlMs,
    });
    for (const e of options.entries ?? []) this.#kinds.set(e.name, e.disk);
    // Fresh overlays of an earlier run belong to boots that are over.
    rmSync(join(options.stateDir, "ephemeral"), { recursive: true, force: true });
    this.#sweep = setInterval(() => {
      this.#drop(this.#tickets.expire()).catch((err: Error) =>
        this.#log.warn({ err: err.message }, "cannot drop expired boot exports"),
      );
    }, SWEEP_MS);
    this.#sweep.unref();
  }

  /** The image entries after a reload (their disk kinds). */
  setEntries(entries: ImageEntry[]): void {
    this.#kinds.clear();
    for (const e of entries) this.#kinds.set(e.name, e.disk);
  }

  /** An entry a reload changed or removed: its next boot opens its (new) image again. */
  forgetEntry(name: string): void {
    this.#releases.forgetEntry(name);
  }

  static exportName(entry: string, mac: string): string {
    return ExportTickets.prefix(entry, mac);
  }

  /**
   * Makes an export for this boot of the machine at `address` and returns its name: a per-boot
   * ticket (`ENTRY-MAC-TOKEN`) that only `address` may open (unless nbd.allow is `any`). Its
   * disk — a fresh overlay (`ephemeral`) or the machine's own (`per-machine`, shared by its
   * tickets) — is opened when a client first uses it. Older tickets stay until they expire, so
   * a machine connected on one is never cut off by a new plan.
   */
  async prepare(entry: ImageEntry, mac: string, address: string): Promise<string> {
    const current = await this.#releases.current(entry);
    const path = this.#overlayPath(entry, mac);
    const key = ImageExports.exportName(entry.name, mac);
    // A kept disk already open stays on the release it was opened over (size included).
    const shared = entry.disk === "per-machine" ? this.#disks.get(key) : undefined;
    const base = shared?.base ?? (await this.#releases.diskBase(entry, mac, path, current));
    const { ticket, dropped } = this.#tickets.issue(entry.name, mac, plainAddress(address) ?? "");
    await this.#drop(dropped);
    const device = new LazyDevice(base.trace.size, () =>
      entry.disk === "per-machine"
        ? this.#machineDisk(entry, mac, path, base)
        : this.#ephemeralDisk(entry, ticket.name, base),
    );
    this.#exports.set(ticket.name, { device, entry: entry.name, mac, base });
    // A new disk gets its identity (cloud-init's instance-id) with it; a disk made before
    // identities were kept has one derived from its path (diskId), so it keeps that.
    if (entry.disk === "per-machine" && !existsSync(path) && !existsSync(`${path}.instance`)) {
      await mkdir(dirname(path), { recursive: true });
      await writeFileAtomic(`${path}.instance`, `${randomBytes(8).toString("hex")}\n`);
    }
    const label = base.stack.label;
    this.#o.nbd.setExport({
      name: ticket.name,
      description: `${label} for ${mac}`,
      device,
      allow: (remote) => this.#allows(ticket, remote),
      // With allow: any the token is all that guards the disk: never listed to anyone.
      listed: this.#o.allow !== "any",
    });
    return ticket.name;
  }

  /**
   * What the machine's disk boots when its entry takes the kernel from the image: the boot
   * files of the release under its newest export (else the entry's current release).
   */
  async boot(entry: ImageEntry, mac: string): Promise<ExtractedBoot> {
    const name = this.#tickets.current(entry.name, mac)?.name;
    const base = (name && this.#exports.get(name)?.base) || (await this.#releases.current(entry));
    return this.#bootFiles.of(base.stack.baseId, base.stack.label, base.stack.device);
  }

  /**
   * The identity of the machine's disk, for cloud-init's instance-id: kept with a per-machine
   * disk until it is reset; each boot's own for an ephemeral one. Null before its first plan.
   */
  diskId(entry: ImageEntry, mac: string): string | null {
    if (entry.disk === "per-machine") {
      const path = this.#overlayPath(entry, mac);
      try {
        return readFileSync(`${path}.instance`, "utf8").trim() || null;
      } catch {
        return existsSync(path)
          ? createHash("sha256").update(path).digest("hex").slice(0, 16)
          : null;
      }
    }
    const name = this.#tickets.current(entry.name, mac)?.name;
    return name ? createHash("sha256").update(name).digest("hex").slice(0, 16) : null;
  }

  /** The address the machine's newest boot of the entry came from (its disk's owner). */
  addressOf(entry: string, mac: string): string | undefined {
    return this.#tickets.current(entry, mac)?.address;
  }

  /** Whether `remote` may open `ticket`'s export now. */
  #allows(ticket: Ticket, remote: string | undefined): boolean {
    if (this.#tickets.get(ticket.name) !== ticket) return false;
    if (this.#o.allow !== "any" && plainAddress(remote) !== ticket.address) return false;
    // A boot's disk needs a connection or a few (multi-conn), never the server's whole budget.
    if (this.#o.nbd.clientsOf(ticket.name) >= MAX_CONNECTIONS_PER_BOOT) return false;
    const entry = this.#exports.get(ticket.name);
    if (!entry || !this.#perMachine(entry.entry)) return true;
    // A machine's kept disk opens only on its newest ticket (an older one's connection stays),
    // and never while a connection from another address uses it: claiming the MAC of a running
    // machine does not open its disk.
    if (!this.#tickets.isCurrent(ticket)) return false;
    return !this.#tickets
      .of(ticket.entry, ticket.mac)
      .some((t) => t.address !== ticket.address && this.#o.nbd.clientsOf(t.name) > 0);
  }

  #perMachine(entry: string): boolean {
    return this.#kinds.get(entry) === "per-machine";
  }

  /** The machine's kept disk, opened once and shared by its tickets. */
  async #machineDisk(
    entry: ImageEntry,
    mac: string,
    path: string,
    base: Base,
  ): Promise<BlockDevice> {
    const key = ImageExports.exportName(entry.name, mac);
    let p = this.#disks.get(key)?.device;
    if (!p) {
      p = (async () => {
        await mkdir(dirname(path), { recursive: true });
        const fresh = !existsSync(path);
        const device = await CowDevice.open(new BorrowedDevice(base.trace), path, {
          baseId: base.stack.baseId,
        });
        const release = base.stack.image?.release;
        if (fresh && release) {
          const origin: DiskOrigin = {
            source: `${entry.image.source.replace(/@.*$/, "")}@sha256:${release.digest}`,
            label: base.stack.label,
            baseId: base.stack.baseId,
          };
          await writeFileAtomic(`${path}.release.json`, JSON.stringify(origin) + "\n");
        }
        return device;
      })();
      const opening = p;
      this.#disks.set(key, { base, device: opening });
      opening.catch(() => {
        if (this.#disks.get(key)?.device === opening) this.#disks.delete(key);
      });
    }
    return new BorrowedDevice(await p);
  }

  /** A fresh overlay for one boot, deleted when its ticket goes. */
  async #ephemeralDisk(entry: ImageEntry, name: string, base: Base): Promise<BlockDevice> {
    const path = this.#ephemeralPath(entry.name, name);
    await mkdir(dirname(path), { recursive: true });
    await rm(path, { force: true });
    return CowDevice.open(new BorrowedDevice(base.trace), path, { baseId: base.stack.baseId });
  }

  #ephemeralPath(entry: string, name: string): string {
    return join(this.#o.stateDir, "ephemeral", entry, `${name}.cow`);
  }

  /** Removes the exports of tickets that went; closes disks no ticket uses any more. */
  async #drop(tickets: Ticket[]): Promise<void> {
    for (const t of tickets) {
      this.#o.nbd.removeExport(t.name);
      const e = this.#exports.get(t.name);
      this.#exports.delete(t.name);
      if (!e) continue;
      try {
        await e.device.close();
        if (this.#perMachine(e.entry)) {
          if (this.#tickets.of(e.entry, e.mac).length === 0) await this.#closeDisk(e.entry, e.mac);
        } else {
          await rm(this.#ephemeralPath(e.entry, t.name), { force: true });
        }
      } catch (err) {
        this.#log.warn(
          { entry: e.entry, mac: e.mac, err: (err as Error).message },
          "cannot close a boot's disk",
        );
      }
    }
  }

  async #closeDisk(entry: string, mac: string): Promise<void> {
    const key = ImageExports.exportName(entry, mac);
    const disk = this.#disks.get(key);
    this.#disks.delete(key);
    await (await disk?.device.catch(() => null))?.close();
  }

  /** The machine's current export name for the entry (DHCP root path), if it has one. */
  currentExport(entry: string, mac: string): string | undefined {
    return this.#tickets.current(entry, mac)?.name;
  }

  /** Exports (tickets) and opened disks, for bounds checks and the API. */
  get counts(): { tickets: number; disks: number; opened: number } {
    let opened = 0;
    for (const e of this.#exports.values()) if (e.device.opened) opened++;
    return { tickets: this.#tickets.size, disks: this.#disks.size, opened };
  }

  #overlayPath(entry: ImageEntry, mac: string): string {
    return join(this.#o.stateDir, "overlays", entry.name, `${mac.replace(/:/g, "-")}.cow`);
  }

  /**
   * Discards a machine's disk (its copy-on-write overlay): its next boot starts from the image
   * as published. A machine still running on it loses its disk. Resolves with whether it had one.
   */
  async resetDisk(entry: ImageEntry, mac: string): Promise<boolean> {
    const key = ImageExports.exportName(entry.name, mac);
    const path = this.#overlayPath(entry, mac);
    const had = this.#disks.has(key) || existsSync(path);
    const tickets = this.#tickets.of(entry.name, mac);
    for (const t of tickets) this.#tickets.remove(t.name);
    await this.#drop(tickets);
    await this.#closeDisk(entry.name, mac);
    await rm(path, { force: true });
    await rm(`${path}.release.json`, { force: true });
    await rm(`${path}.instance`, { force: true });
    this.#releases.forget(entry.name, mac);
    this.#log.info({ entry: entry.name, mac, overlay: path, had }, "machine disk reset");
    return had;
  }

  async close(): Promise<void> {
    clearInterval(this.#sweep);
    for (const e of this.#exports.values()) await e.device.close();
    for (const d of this.#disks.values()) await (await d.device.catch(() => null))?.close();
    this.#exports.clear();
    this.#disks.clear();
    await this.#releases.close();
  }

  // The releases under the disks (image-releases.ts), for the API, pages and roll-back.
  pin(entry: string): string | null {
    return this.#releases.pin(entry);
  }

  setPin(entry: ImageEntry, digest: string | null): Promise<void> {
    return this.#releases.setPin(entry, digest);
  }

  source(entry: ImageEntry): string {
    return this.#releases.source(entry);
  }

  opened(): ReturnType<ImageReleases["opened"]> {
    return this.#releases.opened();
  }

  staysOn(entry: string, mac: string): string | null {
    return this.#releases.staysOn(entry, mac);
  }

  /** The opened images' statistics, with what each boots when its kernel is the image's. */
  async stats(): Promise<Record<string, unknown>[]> {
    const boots = await this.bootsKnown();
    return (await this.#releases.stats()).map((s) => ({
      ...s,
      boot: boots.get(s.entry as string) ?? null,
    }));
  }

  /** Entry → what its open release boots, for entries whose kernel is the image's (once known). */
  async bootsKnown(): Promise<Map<string, ExtractedBoot>> {
    const out = new Map<string, ExtractedBoot>();
    for (const { entry, stack } of await this.#releases.opened()) {
      const b = this.#bootFiles.known(stack.baseId);
      if (b) out.set(entry, b);
    }
    return out;
  }

  profile(entry: string): Promise<string | null> {
    return this.#releases.profile(entry);
  }
}
