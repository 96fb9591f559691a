// A machine's plan and files, whatever loader asks and over whatever transport: which entry it
// boots (rules, one-shot entries), the plan the entry's kind makes for it, the refusal when its
// MAC is not its address's, and the kernel and initrds the plan names. iPXE asks over HTTP
// (machine-routes.ts), GRUB over TFTP (grub-tftp.ts); both render the same plan.
import type { LeaseDb } from "../dhcp/leases.ts";
import type { RemoteFileCache } from "../http/file-cache.ts";
import { RateLimitedLog } from "../lib/rate-limited-log.ts";
import type { Logger } from "../lib/log.ts";
import type { BootPlan } from "./boot-plan.ts";
import type { Entry, FileRef, ServeConfig } from "./config.ts";
import { kindOf } from "./entries/index.ts";
import type { EntryFile, FileContext, PlanContext } from "./entries/kind.ts";
import { MAX_MACHINES } from "./events.ts";
import type { EventInput, EventLog } from "./events.ts";
import { HttpError } from "./http-util.ts";
import type { ImageExports } from "./image-exports.ts";
import type { IsoEntries } from "./iso-entries.ts";
import type { OnceState } from "./once.ts";
import type { MachineRegistry } from "./machine-registry.ts";
import { chooseEntry, resolveOnce } from "./plan.ts";
import { withMachineFiles } from "./templated-files.ts";
import type { Choice, MachineFacts } from "./plan.ts";

/** What plans and files use of the server (getters: parts start and stop). */
export interface MachineSources {
  config: ServeConfig;
  events: EventLog;
  log: Logger;
  record(input: EventInput, facts?: Parameters<EventLog["record"]>[1]): void;
  images(): ImageExports | null;
  isos: IsoEntries;
  once(): OnceState | null;
  /** The machine registry: its records win over the rules. */
  registry(): MachineRegistry | null;
  leases(): LeaseDb | undefined;
  nbdPort(): number;
  remote: RemoteFileCache;
  nbdOverlay(): string | null;
  baseUrl(): string;
}

/** Who asks for a plan: the facts it reported, where from, and the base URL it used. */
export interface PlanRequest {
  facts: MachineFacts;
  ip: string;
  base: string;
  /** The request (its query identifies the machine; plans that wait ask it again). */
  url: URL;
}

/** CPU names among a machine's architecture names (the rest are firmware kinds and codes). */
const CPUS = ["x86_64", "i386", "arm64", "arm32", "riscv64"];

export class MachinePlans {
  readonly s: MachineSources;
  /** Refused plans are logged at most once per interval per address. */
  readonly #refusals = new RateLimitedLog();
  /** "ENTRY MAC" → the address its last plan was granted to (per-machine files go there). */
  readonly #owners = new Map<string, string>();

  constructor(sources: MachineSources) {
    this.s = sources;
  }

  /**
   * The entry a machine boots: its registry record's next boot, else the record's entry, else
   * its rules (with the record's host name and labels as facts); one-shot entries already
   * used become `local`. A record naming an entry the configuration no longer has is skipped.
   */
  choose(facts: MachineFacts): Choice & { entry: string } {
    const config = this.s.config;
    const record = facts.mac ? this.s.registry()?.get(facts.mac) : undefined;
    if (record?.next && config.entries.has(record.next)) {
      return { entry: record.next, rule: "registry: next boot" };
    }
    const withRecord = record
      ? {
          ...facts,
          hostname: record.hostname ?? facts.hostname,
          labels: { ...facts.labels, ...record.labels },
        }
      : facts;
    const choice =
      record?.entry && config.entries.has(record.entry)
        ? { entry: record.entry, rule: "registry" }
        : chooseEntry(config, withRecord);
    return resolveOnce(
      config,
      (mac, entry) => this.s.once()?.consumed(mac, entry) ?? false,
      choice,
      facts.mac,
    );
  }

  /**
   * Why a plan for `mac` asked from `ip` is refused, or null. With our own DHCP (full mode) the
   * server knows who holds which address: an address holding a lease speaks only for its MAC,
   * and a MAC holding a lease is spoken for only from its address. (In proxy mode, and for
   * addresses and MACs without a lease, the MAC is taken as given: see docs/serve.md.) A
   * refusal is recorded without the MAC (the claim must not touch the real machine's record).
   */
  refusal(mac: string | undefined, ip: string): string | null {
    const leases = this.s.leases();
    if (!leases || !mac) return null;
    const holder = leases.holderOf(ip);
    let why: string | null;
    if (holder !== undefined) {
      why = holder === mac ? null : `${ip} holds the DHCP lease of ${holder}, not of ${mac}`;
    } else {
      const at = leases.addressOf(mac);
      why =
        at !== undefined && at !== ip ? `${mac} holds the DHCP lease of ${at}, not ${ip}` : null;
    }
    if (!why) return null;
    this.s.record({ stage: "plan-refused", ip, detail: `plan for ${mac}: ${why}` });
    this.#refusals.hit(ip, (suppressed) =>
      this.s.log.warn(
        { ip, mac, reason: why, suppressed },
        "plan request refused: the MAC is not this address's",
      ),
    );
    return why;
  }

  /** The plan of `entry` for the asking machine; one-shot entries that boot now are used up. */
  async plan(entry: Entry, req: PlanRequest): Promise<BootPlan> {
    const { mac } = req.facts;
    const query = new URLSearchParams(req.url.searchParams);
    if (mac) query.set("mac", mac.replace(/:/g, "-"));
    const ctx: PlanContext = {
      base: req.base,
      query: query.toString(),
      mac,
      ip: req.ip,
      cpu: req.facts.arch.find((a) => CPUS.includes(a)),
      url: req.url,
      titleOf: (n) => this.s.config.entries.get(n)?.title ?? n,
      images: this.s.images(),
      isos: this.s.isos,
      nbd: { host: new URL(req.base).hostname, port: this.s.nbdPort() },
      record: (input) => this.s.record(input),
    };
    const plan = withMachineFiles(await kindOf(entry).plan(entry, ctx), entry, req.base, mac);
    if (mac && plan.kind !== "error") this.#grant(entry.name, mac, req.ip);
    if (plan.kind === "error")
      this.s.log.warn(
        { entry: entry.name, mac, err: plan.message },
        "a machine cannot boot its entry",
      );
    // A registry next boot is used up by the plan that boots it.
    if (mac && !["error", "wait"].includes(plan.kind)) {
      const used = await this.s
        .registry()
        ?.consumeNext(mac, entry.name)
        .catch((err: Error) => {
          this.s.log.warn({ mac, err: err.message }, "cannot clear a machine's next boot");
          return false;
        });
      if (used) this.s.record({ stage: "next-boot-used", mac, ip: req.ip, entry: entry.name });
    }
    // One-shot: a plan that fetches a kernel is used up when the kernel is fetched (see file());
    // any other plan that boots something is used up now.
    if (entry.once && mac && !["kernel", "error", "wait"].includes(plan.kind)) {
      await this.s.once()?.consume(mac, entry.name);
    }
    return plan;
  }

  #grant(entry: string, mac: string, ip: string): void {
    const key = `${entry} ${mac}`;
    this.#owners.delete(key);
    this.#owners.set(key, ip.replace(/^::ffff:/, ""));
    if (this.#owners.size > MAX_MACHINES) this.#owners.delete(this.#owners.keys().next().value!);
  }

  /** The address entry's last plan for `mac` was granted to (the machine, as far as known). */
  owner(entry: string, mac: string): string | undefined {
    return this.#owners.get(`${entry} ${mac}`);
  }

  async #local(ref: FileRef): Promise<{ path: string; etag?: string }> {
    if (ref.path) return { path: ref.path };
    const cached = await this.s.remote.get(ref.url as string, ref.sha256).catch((err: unknown) => {
      throw new HttpError(502, (err as Error).message);
    });
    return { path: cached.path, etag: cached.sha256 };
  }

  /**
   * The kernel (initrd -1) or initrd N of entry `name` as a local file; `stage` names the
   * transport's events ("http-kernel", "tftp-initrd"). Errors are HttpErrors (404, 502), with
   * an event. A one-shot entry is used up when its kernel is asked for (before the reply, so
   * the machine's next request already sees it).
   */
  async file(
    name: string,
    initrd: number,
    who: { mac?: string; ip: string },
    stage: string,
  ): Promise<EntryFile> {
    const entry = this.s.config.entries.get(name);
    const kind = entry ? kindOf(entry) : undefined;
    if (!entry || !kind?.file) throw new HttpError(404, `No kernel entry named "${name}"`);
    const ctx: FileContext = {
      local: (ref) => this.#local(ref),
      isos: this.s.isos,
      nbdOverlay: this.s.nbdOverlay(),
      mac: who.mac,
      images: this.s.images(),
    };
    let file;
    try {
      file = await kind.file(entry, initrd, ctx);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      const message = (err as Error).message;
      this.s.record({ stage: `${stage}-error`, ...who, entry: name, detail: message });
      throw new HttpError(502, message);
    }
    if (!file) throw new HttpError(404, `Entry "${name}" has no initrd ${initrd}`);
    if (initrd < 0 && entry.once && who.mac) await this.s.once()?.consume(who.mac, name);
    return file;
  }
}
