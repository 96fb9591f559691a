// What machines fetch to boot: /boot.ipxe (who is asking), /ipxe/boot (its plan), /ipxe/entry/
// NAME (a menu's choice), /files/ENTRY/kernel|initrd/N, /iso/ENTRY/… (a live ISO and its tree)
// and /firmware/NAME (first stages over HTTP). Plans come from the entry kinds as data and are
// rendered here as iPXE scripts (machine-plans.ts makes them, and serves GRUB too).
import type { IncomingMessage, ServerResponse } from "node:http";
import { sendFile } from "../http/send-file.ts";
import type { Entry } from "./config.ts";
import { clientIp, HttpError, macFromQuery, send } from "./http-util.ts";
import { TemplatedFiles } from "./templated-files.ts";
import { bootScript, errorScript, renderIpxe } from "./ipxe-render.ts";
import type { MachinePlans, MachineSources } from "./machine-plans.ts";
import { baseFromHost, requestFacts } from "./request-facts.ts";

const TEXT = "text/plain; charset=utf-8";

/** What the boot routes use of the server, beyond plans: the first stages served over HTTP. */
export interface MachineRouteSources {
  plans: MachinePlans;
  /** First-stage binaries by name (a null-prototype object). */
  firstStages: Record<string, string>;
}

export class MachineRoutes {
  readonly #s: MachineSources;
  readonly #plans: MachinePlans;
  readonly #firstStages: Record<string, string>;
  readonly #templated: TemplatedFiles;

  constructor(sources: MachineRouteSources) {
    this.#plans = sources.plans;
    this.#s = sources.plans.s;
    this.#firstStages = sources.firstStages;
    const plans = this.#plans;
    const s = this.#s;
    this.#templated = new TemplatedFiles({
      get config() {
        return s.config;
      },
      events: s.events,
      images: () => s.images(),
      registry: () => s.registry(),
      record: (input) => s.record(input),
      owner: (entry, mac) => plans.owner(entry, mac),
    });
  }

  /** /cloud-init/ENTRY/MAC/FILE and /machine-files/ENTRY/MAC/NAME: the machine's own files. */
  machineFile(
    req: IncomingMessage,
    res: ServerResponse,
    kind: "cloud-init" | "file",
    entry: string,
    macText: string,
    name: string,
  ): void {
    const mac = macFromQuery(macText);
    if (!mac) throw new HttpError(400, `"${macText.slice(0, 40)}" is not a MAC address`);
    const body = this.#templated.render(kind, entry, mac, name, clientIp(req), this.#base(req));
    res.writeHead(200, {
      "Content-Type": "text/plain; charset=utf-8",
      "Content-Length": Buffer.byteLength(body),
      "Cache-Control": "no-store",
    });
    res.end(req.method === "HEAD" ? undefined : body);
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
    const choice = this.#plans.choose(facts);
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
        loader: "iPXE",
        labels: facts.labels,
      },
    );
    const plan = await this.#plans.plan(entry, { facts, ip, base: this.#base(req), url });
    send(res, 200, renderIpxe(plan), TEXT);
  }

  /** /ipxe/entry/NAME: an entry a menu offered. */
  async entry(req: IncomingMessage, res: ServerResponse, url: URL, name: string): Promise<void> {
    const entry = this.#s.config.entries.get(name);
    if (!entry) throw new HttpError(404, `No entry named "${name}" in ${this.#s.config.source}`);
    const ip = clientIp(req);
    const facts = requestFacts(url.searchParams, this.#s.events.macForIp(ip));
    if (this.#refusedMac(req, res, facts.mac)) return;
    this.#s.record({ stage: "http-entry", mac: facts.mac, ip, entry: name, rule: "menu" });
    const plan = await this.#plans.plan(entry, { facts, ip, base: this.#base(req), url });
    send(res, 200, renderIpxe(plan), TEXT);
  }

  /** Sends the refusal when the plan's MAC is not the requester's; true if it did. */
  #refusedMac(req: IncomingMessage, res: ServerResponse, mac: string | undefined): boolean {
    const why = this.#plans.refusal(mac, clientIp(req));
    if (!why) return false;
    send(res, 403, errorScript(`refused: ${why}`), TEXT);
    return true;
  }

  /** /files/ENTRY/kernel and /files/ENTRY/initrd/N. */
  async file(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    name: string,
    initrd: number,
  ): Promise<void> {
    const ip = clientIp(req);
    const mac = macFromQuery(url.searchParams.get("mac")) ?? this.#s.events.macForIp(ip);
    const stage = initrd < 0 ? "http-kernel" : "http-initrd";
    const file = await this.#plans.file(name, initrd, { mac, ip }, stage);
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
    if (!Object.hasOwn(this.#firstStages, name)) {
      throw new HttpError(404, `No first stage named "${name}"`);
    }
    const bytes = await sendFile(req, res, this.#firstStages[name], {
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
