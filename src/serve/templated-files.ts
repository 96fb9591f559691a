// Per-machine files served by the boot server: an entry's cloud-init NoCloud datasource at
// /cloud-init/ENTRY/MAC/{meta-data,user-data,vendor-data,network-config} and its other
// templated files at /machine-files/ENTRY/MAC/NAME, filled with what the server knows of that
// machine. The URLs reach the machine on its kernel command line (withMachineFiles). A file
// is only served to the address the machine booted from (its plan's, or its disk's): the MAC in
// a URL is never taken on its word, since user-data may carry keys and password hashes.
import { createHash } from "node:crypto";
import type { BootPlan } from "./boot-plan.ts";
import type { Entry, ServeConfig } from "./config.ts";
import { CLOUD_INIT_FILES, FILE_URL } from "./config/machine-files.ts";
import type { CloudInitFile } from "./config/machine-files.ts";
import type { EventInput, EventLog } from "./events.ts";
import { HttpError } from "./http-util.ts";
import type { ImageExports } from "./image-exports.ts";
import { chooseEntry } from "./plan.ts";
import type { MachineRegistry } from "./machine-registry.ts";
import { parseTemplate, renderTemplate } from "./template.ts";
import type { Template, TemplateFacts } from "./template.ts";

const dashed = (mac: string): string => mac.replace(/:/g, "-");

const defaultTemplate = (text: string, name: string): Template =>
  parseTemplate(text, `(built-in ${name})`).template as Template;

/** What a datasource file is when the entry gives none. */
const DEFAULTS: Record<CloudInitFile, Template> = {
  "meta-data": defaultTemplate(
    "instance-id: {{ instance_id | yaml }}\nlocal-hostname: {{ hostname | yaml }}\n",
    "meta-data",
  ),
  "user-data": defaultTemplate("#cloud-config\n{}\n", "user-data"),
  // An empty vendor-data (a 404 costs cloud-init ~11 s of retries).
  "vendor-data": defaultTemplate("", "vendor-data"),
  // Empty: cloud-init's own fallback (DHCP on the first interface).
  "network-config": defaultTemplate("", "network-config"),
};

/**
 * An image entry's root is on the network: cloud-init must not take the interface down to
 * reconfigure it (the initramfs configured it).
 */
const KEEP_NETWORK = defaultTemplate("network:\n  config: disabled\n", "network-config");

/** A kernel plan with the entry's file URLs filled in and cloud-init's datasource added. */
export function withMachineFiles(
  plan: BootPlan,
  entry: Entry,
  base: string,
  mac?: string,
): BootPlan {
  const files = entry.machineFiles;
  if (plan.kind !== "kernel" || !files) return plan;
  if (!mac) {
    return {
      kind: "error",
      message: `${entry.name} serves per-machine files and needs the machine's MAC (chain /boot.ipxe)`,
    };
  }
  const at = `${base}/machine-files/${encodeURIComponent(entry.name)}/${dashed(mac)}`;
  let cmdline = plan.cmdline.replace(FILE_URL, (_m, name: string) => `${at}/${name}`);
  if (files.cloudInit) {
    // nocloud-net: Debian 12's cloud-init 22.4 applies a network seed only under this name.
    cmdline += ` ds=nocloud-net;s=${base}/cloud-init/${encodeURIComponent(entry.name)}/${dashed(mac)}/`;
  }
  return { ...plan, cmdline: cmdline.trim() };
}

export interface TemplatedSources {
  /** The address entry's last plan for the MAC was granted to (after the lease check). */
  owner(entry: string, mac: string): string | undefined;
  config: ServeConfig;
  registry(): MachineRegistry | null;
  events: EventLog;
  images(): ImageExports | null;
  record(input: EventInput): void;
}

export class TemplatedFiles {
  readonly #s: TemplatedSources;
  constructor(sources: TemplatedSources) {
    this.#s = sources;
  }

  /**
   * The rendered file `name` of `entryName` for machine `mac` asked by `ip`; `kind` says which
   * family (cloud-init's datasource or the entry's files:). HttpErrors: 404, 403.
   */
  render(
    kind: "cloud-init" | "file",
    entryName: string,
    mac: string,
    name: string,
    ip: string,
    base: string,
  ): string {
    const entry = this.#s.config.entries.get(entryName);
    const files = entry?.machineFiles;
    if (!entry || !files)
      throw new HttpError(404, `Entry "${entryName}" serves no per-machine files`);
    let template: Template | undefined;
    if (kind === "cloud-init") {
      if (!files.cloudInit) throw new HttpError(404, `Entry "${entryName}" has no cloud-init:`);
      if (!(CLOUD_INIT_FILES as readonly string[]).includes(name))
        throw new HttpError(404, `cloud-init asks for ${CLOUD_INIT_FILES.join(", ")}; not ${name}`);
      const key = name as CloudInitFile;
      template =
        files.cloudInit[key] ??
        (key === "network-config" && entry.kind === "image" ? KEEP_NETWORK : DEFAULTS[key]);
    } else {
      template = files.files.get(name);
      if (!template) throw new HttpError(404, `Entry "${entryName}" has no file "${name}"`);
    }
    const facts = this.#facts(entry, mac, ip, base);
    const body = renderTemplate(template, facts);
    this.#s.record({
      stage: kind === "cloud-init" ? "cloud-init" : "machine-file",
      mac,
      ip,
      entry: entryName,
      file: name,
      detail: kind === "cloud-init" ? `instance-id ${facts.values.instance_id}` : undefined,
    });
    return body;
  }

  /** The machine's facts, after checking that `ip` is the machine. */
  #facts(entry: Entry, mac: string, ip: string, base: string): TemplateFacts {
    const record = this.#s.events.machine(mac);
    const images = this.#s.images();
    const image = entry.kind === "image" ? entry : undefined;
    // Never the machine record's address: any request naming a MAC moves that.
    const owner = (image && images?.addressOf(image.name, mac)) ?? this.#s.owner(entry.name, mac);
    if (!owner)
      throw new HttpError(
        403,
        `${mac} has not booted here: its files are served to it once it has asked for its plan`,
      );
    if (owner.replace(/^::ffff:/, "") !== ip.replace(/^::ffff:/, "")) {
      this.#s.record({
        // No mac: the event must not move the machine record to the asking address.
        stage: "machine-file-refused",
        ip,
        entry: entry.name,
        detail: `asked from ${ip}; ${mac} booted from ${owner}`,
      });
      throw new HttpError(403, `${mac}'s files are served only to the address it booted from`);
    }
    // The rule that names the machine, as DHCP finds it (name and line: names may repeat).
    const choice = chooseEntry(this.#s.config, {
      mac,
      arch: [],
      hostname: record?.hostname,
      labels: record?.labels ?? {},
    });
    const rule = this.#s.config.machines.find(
      (r) => r.name === choice.rule && r.line === choice.line,
    );
    const kept = this.#s.registry()?.get(mac);
    const plain = mac.replace(/:/g, "");
    const diskId = image && images?.diskId(image, mac);
    const instance =
      diskId ?? createHash("sha256").update(`${entry.name} ${mac}`).digest("hex").slice(0, 16);
    return {
      values: {
        mac,
        mac_dashes: dashed(mac),
        mac_plain: plain,
        ip: owner.replace(/^::ffff:/, ""),
        hostname: kept?.hostname ?? rule?.hostname ?? record?.hostname ?? `host-${plain}`,
        entry: entry.name,
        release: image && images ? images.source(image) : "",
        instance_id: `i-${instance}`,
        server: base,
      },
      labels: { ...record?.labels, ...kept?.labels },
    };
  }
}
