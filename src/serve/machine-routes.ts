// What machines fetch to boot: /boot.ipxe (who is asking), /ipxe/boot (its plan), /ipxe/entry/
// NAME (a menu's choice), /files/ENTRY/kernel|initrd/N, /iso/ENTRY/… (a live ISO and its tree)
// and /firmware/NAME (first stages over HTTP). Plans come from the entry kinds as data and are
// rendered here; one-shot entries are used up here and nowhere else.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { LeaseDb } from "../dhcp/leases.ts";
import type { RemoteFileCache } from "../http/file-cache.ts";
import { sendFile } from "../http/send-file.ts";
import { RateLimitedLog } from "../lib/rate-limited-log.ts";
import type { Logger } from "../lib/log.ts";
import type { Entry, FileRef, ServeConfig } from "./config.ts";
import { kindOf } from "./entries/index.ts";
import type { FileContext, PlanContext } from "./entries/kind.ts";
import type { EventInput, EventLog } from "./events.ts";
import { clientIp, HttpError, macFromQuery, send } from "./http-util.ts";
import type { ImageExports } from "./image-exports.ts";
import { bootScript, errorScript, renderIpxe } from "./ipxe-render.ts";
import type { IsoEntries } from "./iso-entries.ts";
import type { OnceState } from "./once.ts";
import { chooseEntry, resolveOnce } from "./plan.ts";
import { baseFromHost, requestFacts } from "./request-facts.ts";

const TEXT = "text/plain; charset=utf-8";

/** What the boot routes use of the server (getters: parts start and stop). */
export interface MachineSources {
  config: ServeConfig;
  events: EventLog;
  log: Logger;
  record(input: EventInput, facts?: Parameters<EventLog["record"]>[1]): void;
  images(): ImageExports | null;
  isos: IsoEntries;
  once(): OnceState | null;
  leases(): LeaseDb | undefined;
  nbdPort(): number;
  remote: RemoteFileCache;
  /** First-stage binaries by name (a null-prototype object). */
  firstStages: Record<string, string>;
  nbdOverlay(): string | null;
  baseUrl(): string;
}

export class MachineRoutes {
  readonly #s: MachineSources;
  /** Refused plans are logged at most once per interval per address. */
  readonly #refusals = new RateLimitedLog();

  constructor(sources: MachineSources) {
    this.#s = sources;
  }

  /** The base URL for links in a reply: the Host the client used, if it is a valid one. */
  #base(req: IncomingMessage): string {
    return this.#s.config.http.publicUrl ?? baseFromHost(req.headers.host) ?? this.#s.baseUrl();
  }

  bootScript(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const ip = clientIp(req);
    const facts = requestFacts(url.searchParams, this.#s.events.macForIp(ip));
    this.#s.record({ stage: "http-boot-script", mac: facts.mac, ip });
    send(res, 200, bootScript(this.#base(req), facts.labels), TEXT);
  }

  /** /ipxe/boot: the machine's plan, by its rules. */
  async plan(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const ip = clientIp(req);
    const facts = requestFacts(url.searchParams, this.#s.events.macForIp(ip));
    if (this.#refusedMac(req, res, facts.mac)) return;
    const choice = resolveOnce(
      this.#s.config,
      (mac, entry) => this.#s.once()?.consumed(mac, entry) ?? false,
      chooseEntry(this.#s.config, facts),
      facts.mac,
    );
    const entry = this.#s.config.entries.get(choice.entry) as Entry;
    const q = url.searchParams;
    this.#s.record(
      { stage: "http-plan", mac: facts.mac, ip, entry: entry.name, rule: choice.rule },
      {
        hostname: facts.hostname,
        uuid: facts.uuid,
        ipxe: {
          buildarch: q.get("buildarch") ?? undefined,
          platform: q.get("platform") ?? undefined,
        },
      },
    );
    await this.#sendPlan(req, res, url, entry, facts.mac);
  }

  /** /ipxe/entry/NAME: an entry a menu offered. */
  async entry(req: IncomingMessage, res: ServerResponse, url: URL, name: string): Promise<void> {
    const entry = this.#s.config.entries.get(name);
    if (!entry) throw new HttpError(404, `No entry named "${name}" in ${this.#s.config.source}`);
    const ip = clientIp(req);
    const facts = requestFacts(url.searchParams, this.#s.events.macForIp(ip));
    if (this.#refusedMac(req, res, facts.mac)) return;
    this.#s.record({ stage: "http-entry", mac: facts.mac, ip, entry: name, rule: "menu" });
    await this.#sendPlan(req, res, url, entry, facts.mac);
  }

  async #sendPlan(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    entry: Entry,
    mac: string | undefined,
  ): Promise<void> {
    const base = this.#base(req);
    const query = new URLSearchParams(url.searchParams);
    if (mac) query.set("mac", mac.replace(/:/g, "-"));
    const ctx: PlanContext = {
      base,
      query: query.toString(),
      mac,
      ip: clientIp(req),
      url,
      titleOf: (n) => this.#s.config.entries.get(n)?.title ?? n,
      images: this.#s.images(),
      isos: this.#s.isos,
      nbd: { host: new URL(base).hostname, port: this.#s.nbdPort() },
      record: (input) => this.#s.record(input),
    };
    const plan = await kindOf(entry).plan(entry, ctx);
    if (plan.kind === "error")
      this.#s.log.warn(
        { entry: entry.name, mac, err: plan.message },
        "a machine cannot boot its entry",
      );
    // One-shot: a plan that fetches a kernel is used up when the kernel is fetched (see file());
    // any other plan that boots something is used up now.
    if (entry.once && mac && !["kernel", "error", "wait"].includes(plan.kind)) {
      await this.#s.once()?.consume(mac, entry.name);
    }
    send(res, 200, renderIpxe(plan), TEXT);
  }

  /**
   * Why a plan for `mac` asked from `ip` is refused, or null. With our own DHCP (full mode) the
   * server knows who holds which address: an address holding a lease speaks only for its MAC,
   * and a MAC holding a lease is spoken for only from its address. (In proxy mode, and for
   * addresses and MACs without a lease, the MAC is taken as given: see docs/serve.md.)
   */
  #macRefusal(mac: string | undefined, ip: string): string | null {
    const leases = this.#s.leases();
    if (!leases || !mac) return null;
    const holder = leases.holderOf(ip);
    if (holder !== undefined) {
      return holder === mac ? null : `${ip} holds the DHCP lease of ${holder}, not of ${mac}`;
    }
    const at = leases.addressOf(mac);
    return at !== undefined && at !== ip ? `${mac} holds the DHCP lease of ${at}, not ${ip}` : null;
  }

  /** Sends the refusal when the plan's MAC is not the requester's; true if it did. */
  #refusedMac(req: IncomingMessage, res: ServerResponse, mac: string | undefined): boolean {
    const ip = clientIp(req);
    const why = this.#macRefusal(mac, ip);
    if (!why) return false;
    // Recorded without the MAC: the claim must not touch the real machine's record.
    this.#s.record({ stage: "plan-refused", ip, detail: `plan for ${mac}: ${why}` });
    this.#refusals.hit(ip, (suppressed) =>
      this.#s.log.warn(
        { ip, mac, reason: why, suppressed },
        "plan request refused: the MAC is not this address's",
      ),
    );
    send(res, 403, errorScript(`refused: ${why}`), TEXT);
    return true;
  }

  async #local(ref: FileRef): Promise<{ path: string; etag?: string }> {
    if (ref.path) return { path: ref.path };
    const cached = await this.#s.remote.get(ref.url as string, ref.sha256).catch((err: unknown) => {
      throw new HttpError(502, (err as Error).message);
    });
    return { path: cached.path, etag: cached.sha256 };
  }

  /** /files/ENTRY/kernel and /files/ENTRY/initrd/N. */
  async file(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    name: string,
    initrd: number,
  ): Promise<void> {
    const entry = this.#s.config.entries.get(name);
    const kind = entry ? kindOf(entry) : undefined;
    if (!entry || !kind?.file) throw new HttpError(404, `No kernel entry named "${name}"`);
    const ip = clientIp(req);
    const mac = macFromQuery(url.searchParams.get("mac")) ?? this.#s.events.macForIp(ip);
    const stage = initrd < 0 ? "http-kernel" : "http-initrd";
    const ctx: FileContext = {
      local: (ref) => this.#local(ref),
      isos: this.#s.isos,
      nbdOverlay: this.#s.nbdOverlay(),
    };
    let file;
    try {
      file = await kind.file(entry, initrd, ctx);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      const message = (err as Error).message;
      this.#s.record({ stage: `${stage}-error`, mac, ip, entry: name, detail: message });
      throw new HttpError(502, message);
    }
    if (!file) throw new HttpError(404, `Entry "${name}" has no initrd ${initrd}`);
    // A one-shot entry is used up when its kernel is fetched (before the reply, so the
    // machine's next request already sees it).
    if (initrd < 0 && entry.once && mac) await this.#s.once()?.consume(mac, name);
    const started = Date.now();
    const bytes = await sendFile(req, res, file.path, {
      etag: file.etag,
      cacheControl: "no-cache",
    });
    if (bytes < 0) {
      this.#s.record({ stage: `${stage}-missing`, mac, ip, entry: name, file: file.path });
      throw new HttpError(
        404,
        `The file ${file.path} of entry "${name}" does not exist on the server`,
      );
    }
    this.#s.record({
      stage,
      mac,
      ip,
      entry: name,
      file: file.label,
      bytes,
      ms: Date.now() - started,
    });
  }

  /** /iso/ENTRY/NAME.iso and /iso/ENTRY/tree/PATH: what the booted live system fetches. */
  async iso(req: IncomingMessage, res: ServerResponse, name: string, rest: string): Promise<void> {
    const entry = this.#s.config.entries.get(name);
    if (entry?.kind !== "iso") throw new HttpError(404, `No ISO entry named "${name}"`);
    const live = await this.#s.isos.open(entry).catch((err: unknown) => {
      throw new HttpError(502, `cannot open ${entry.iso}: ${(err as Error).message}`);
    });
    const ip = clientIp(req);
    const started = Date.now();
    const bytes = await live.send(req, res, rest);
    if (bytes < 0) throw new HttpError(404, `${entry.iso} has no file ${decodeURIComponent(rest)}`);
    this.#s.record({
      stage: "http-iso",
      mac: this.#s.events.macForIp(ip),
      ip,
      entry: name,
      file: decodeURIComponent(rest),
      bytes,
      ms: Date.now() - started,
    });
  }

  /** /firmware/NAME: an iPXE first stage for UEFI HTTP Boot. */
  async firmware(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    if (!Object.hasOwn(this.#s.firstStages, name)) {
      throw new HttpError(404, `No first stage named "${name}"`);
    }
    const bytes = await sendFile(req, res, this.#s.firstStages[name], {
      cacheControl: "max-age=3600",
    });
    const ip = clientIp(req);
    this.#s.record({
      stage: "http-first-stage",
      mac: this.#s.events.macForIp(ip),
      ip,
      file: name,
      bytes,
    });
  }
}
