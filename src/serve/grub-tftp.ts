// What GRUB fetches over TFTP, beside the first stages and the TFTP root: the bootstrap config
// at its built-in prefix (grub/grub.cfg, debian-installer/ARCH/grub/grub.cfg), the machine's
// plan and a menu's choices rendered as GRUB scripts, and each entry's kernel and initrds at
// the same paths as over HTTP (/files/ENTRY/kernel, /files/ENTRY/initrd/N). The facts in a
// path are bounded like iPXE's query; the asking address is the packet's, checked like HTTP's.
import { BufferSource, normalizeName, openFileSource, TftpError } from "../tftp/tree.ts";
import type { TftpClient, TftpSource, TftpTree } from "../tftp/tree.ts";
import { ErrorCode } from "../tftp/protocol.ts";
import type { Entry } from "./config.ts";
import { GRUB_ENTRY_PATH, GRUB_PLAN_PATH, grubBootstrap, renderGrub } from "./grub-render.ts";
import { HttpError, macFromQuery } from "./http-util.ts";
import type { MachinePlans } from "./machine-plans.ts";
import { requestFacts } from "./request-facts.ts";

/** $prefix/grub.cfg of the network GRUBs people use: Debian's (/grub), the installer's, others. */
const BOOTSTRAP = /^(?:(?!\.\.?\/)[\w.-]{1,64}\/){0,3}grub\/grub\.cfg$/;
const FILES = /^\/files\/([^/?]{1,255})\/(kernel|initrd\/(\d{1,3}))$/;

export class GrubTftpTree implements TftpTree {
  readonly #inner: TftpTree;
  readonly #plans: MachinePlans;

  constructor(inner: TftpTree, plans: MachinePlans) {
    this.#inner = inner;
    this.#plans = plans;
  }

  async open(requested: string, client?: TftpClient): Promise<TftpSource> {
    const ip = client?.address ?? "";
    const name = normalizeName(requested);
    const s = this.#plans.s;
    if (BOOTSTRAP.test(name)) {
      s.record({ stage: "grub-config", mac: s.events.macForIp(ip), ip, file: name });
      return new BufferSource(Buffer.from(grubBootstrap()));
    }
    let url: URL;
    try {
      url = new URL(`/${name}`, "tftp://inetboot");
    } catch {
      return this.#inner.open(requested, client);
    }
    if (url.pathname === GRUB_PLAN_PATH) return this.#plan(url, ip, null);
    if (url.pathname.startsWith(GRUB_ENTRY_PATH)) {
      const entry = safeDecode(url.pathname.slice(GRUB_ENTRY_PATH.length));
      return this.#plan(url, ip, entry ?? "");
    }
    const file = FILES.exec(url.pathname);
    if (file) {
      const entry = safeDecode(file[1]) ?? "";
      return this.#file(url, ip, entry, file[3] === undefined ? -1 : Number(file[3]));
    }
    return this.#inner.open(requested, client);
  }

  /** The machine's plan (menu: null) or the plan of the entry a menu offered. */
  async #plan(url: URL, ip: string, menuChoice: string | null): Promise<TftpSource> {
    const s = this.#plans.s;
    const facts = requestFacts(url.searchParams, s.events.macForIp(ip));
    const base = s.baseUrl();
    const paths = { base, query: url.search.slice(1) };
    const script = (text: string): TftpSource => new BufferSource(Buffer.from(text));
    const why = this.#plans.refusal(facts.mac, ip);
    if (why) return script(renderGrub({ kind: "error", message: `refused: ${why}` }, paths));
    let entry: Entry | undefined;
    if (menuChoice === null) {
      const choice = this.#plans.choose(facts);
      entry = s.config.entries.get(choice.entry);
      s.record(
        { stage: "grub-plan", mac: facts.mac, ip, entry: choice.entry, rule: choice.rule },
        { loader: "GRUB" },
      );
    } else {
      entry = s.config.entries.get(menuChoice);
      if (!entry) throw new TftpError(ErrorCode.FILE_NOT_FOUND, `No entry named ${menuChoice}`);
      s.record({ stage: "grub-entry", mac: facts.mac, ip, entry: menuChoice, rule: "menu" });
    }
    const plan = await this.#plans.plan(entry as Entry, {
      facts,
      ip,
      base,
      url: new URL(`${url.pathname}${url.search}`, base),
    });
    return script(renderGrub(plan, paths));
  }

  async #file(url: URL, ip: string, name: string, initrd: number): Promise<TftpSource> {
    const s = this.#plans.s;
    const mac = macFromQuery(url.searchParams.get("mac")) ?? s.events.macForIp(ip);
    const stage = initrd < 0 ? "tftp-kernel" : "tftp-initrd";
    let file;
    try {
      file = await this.#plans.file(name, initrd, { mac, ip }, stage);
    } catch (err) {
      if (err instanceof HttpError && err.status === 404)
        throw new TftpError(ErrorCode.FILE_NOT_FOUND, err.message);
      throw new TftpError(ErrorCode.NOT_DEFINED, (err as Error).message.slice(0, 200));
    }
    const source = await openFileSource(file.path, url.pathname);
    s.record({ stage, mac, ip, entry: name, file: file.label, bytes: source.size });
    return source;
  }
}

function safeDecode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}
