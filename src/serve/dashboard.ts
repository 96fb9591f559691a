// The dashboard's pages (machines, a machine's timeline, catalog, images, cache and mirrors),
// server-rendered, and its write actions (roll an image entry back, reset a machine's disk,
// a machine's registry record), token-guarded by PeopleAuth. Routes come from the route table (routes.ts).
import type { IncomingMessage, ServerResponse } from "node:http";
import type { ServeConfig } from "./config.ts";
import type { DashboardViews } from "./dashboard-views.ts";
import type { EventInput, EventLog } from "./events.ts";
import { clientIp, HttpError, macFromQuery, send } from "./http-util.ts";
import type { ImageExports } from "./image-exports.ts";
import type { PeopleAuth } from "./people-auth.ts";
import { catalogPage } from "./ui/catalog-page.ts";
import { machinePage, machineRows, machinesPage } from "./ui/machine-pages.ts";
import type { MachineRow } from "./ui/machine-pages.ts";
import { cachePage, imagesPage } from "./ui/store-pages.ts";
import { checkRecord, RegistryError } from "./machine-registry.ts";
import type { MachineRegistry } from "./machine-registry.ts";
import { formRecord, newMachineForm, registryForm } from "./ui/registry-form.ts";

const HTML = "text/html; charset=utf-8";

/** What the dashboard reads from the boot server (getters: parts start and stop). */
export interface DashboardSources {
  config: ServeConfig;
  events: EventLog;
  machineRows(): MachineRow[];
  record(input: EventInput): void;
  images(): ImageExports | null;
  registry(): MachineRegistry | null;
  views: DashboardViews;
  auth: PeopleAuth;
}

export class Dashboard {
  readonly #s: DashboardSources;

  constructor(sources: DashboardSources) {
    this.#s = sources;
  }

  machines(_req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (url.searchParams.get("part") === "rows") {
      send(res, 200, machineRows(this.#s.machineRows()).text, HTML);
    } else {
      const extra = this.#s.config.ui.write
        ? newMachineForm([...this.#s.config.entries.keys()])
        : "";
      send(res, 200, machinesPage(this.#s.machineRows(), extra), HTML);
    }
  }

  /**
   * POST /ui/machines/MAC/registry and /ui/registry (MAC in the form): a machine's registry
   * record from the form, refused with a page saying why (a wrong token, a bad field, a record
   * changed meanwhile).
   */
  async registry(req: IncomingMessage, res: ServerResponse, text: string | null): Promise<void> {
    const back = text === null ? "/ui/machines" : `/ui/machines/${encodeURIComponent(text)}`;
    const form = await this.#s.auth.authorized(req, res, back);
    if (!form) return;
    const mac = macFromQuery(text ?? form.get("mac"));
    if (!mac) return this.#s.auth.refuse(req, res, back, 400, "That is not a MAC address.");
    const registry = this.#s.registry();
    if (!registry) return this.#s.auth.refuse(req, res, back, 503, "The registry is not open.");
    const versionText = form.get("version") ?? "0";
    if (!/^\d{1,15}$/.test(versionText))
      return this.#s.auth.refuse(req, res, back, 400, "The form's version is not a number.");
    const version = Number(versionText);
    try {
      const fields = checkRecord(formRecord(form), (n) => this.#s.config.entries.has(n));
      const r = await registry.update(mac, version > 0 ? `"${version}"` : undefined, (current) => {
        if (version === 0 && current)
          throw new RegistryError(409, `${mac} is in the registry already: change it on its page`);
        return fields;
      });
      this.#s.record({
        stage: "ui-registry",
        mac,
        ip: clientIp(req),
        detail: `version ${r?.version}`,
      });
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      const what = err.field ? `${err.field}: ${err.message}` : err.message;
      return this.#s.auth.refuse(req, res, back, err.status, `Not saved. ${what}`);
    }
    res.writeHead(303, { Location: `/ui/machines/${encodeURIComponent(mac)}` }).end();
  }

  machine(_req: IncomingMessage, res: ServerResponse, text: string): void {
    const mac = macFromQuery(text);
    if (!mac) throw new HttpError(404, `"${text}" is not a MAC address`);
    const row = this.#s.machineRows().find((r) => r.mac === mac);
    // The disk of the image entry it boots can be reset when write actions are on.
    const next = row ? this.#s.config.entries.get(row.next.entry) : undefined;
    const resettable = this.#s.config.ui.write && next?.kind === "image" ? next.name : null;
    const staysOn = resettable ? (this.#s.images()?.staysOn(resettable, mac) ?? null) : null;
    const extra = this.#s.config.ui.write
      ? registryForm(mac, {
          record: this.#s.registry()?.get(mac),
          entries: [...this.#s.config.entries.keys()],
        })
      : "";
    send(
      res,
      200,
      machinePage(mac, row, this.#s.events.events({ mac }), resettable, staysOn, extra),
      HTML,
    );
  }

  catalog(_req: IncomingMessage, res: ServerResponse): void {
    send(res, 200, catalogPage(this.#s.config), HTML);
  }

  async images(_req: IncomingMessage, res: ServerResponse): Promise<void> {
    const [images, isos] = await Promise.all([
      this.#s.views.imageViews(),
      this.#s.views.isoViews(),
    ]);
    send(res, 200, imagesPage(images, isos, this.#s.config.ui.write), HTML);
  }

  async cache(_req: IncomingMessage, res: ServerResponse): Promise<void> {
    send(res, 200, cachePage(await this.#s.views.cacheView()), HTML);
  }

  notFound(_req: IncomingMessage, _res: ServerResponse, path: string): void {
    throw new HttpError(404, `No page at ${path}; the dashboard starts at /ui/machines`);
  }

  /** POST /ui/images/ENTRY/pin: roll an image entry back to a release (or to the latest). */
  async pin(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    const back = "/ui/images";
    const form = await this.#s.auth.authorized(req, res, back);
    if (!form) return;
    const entry = this.#s.config.entries.get(name);
    const images = this.#s.images();
    if (entry?.kind !== "image" || !images) {
      return this.#s.auth.refuse(req, res, back, 404, `No image entry ${name}.`);
    }
    const release = form.get("release") ?? "";
    if (release === "latest") {
      await images.setPin(entry, null);
    } else {
      const known = (await this.#s.views.listing(entry)).some((r) => r.digest === release);
      if (!/^[0-9a-f]{64}$/.test(release) || !known) {
        return this.#s.auth.refuse(
          req,
          res,
          back,
          400,
          `${release} is not a release of ${entry.image.source} in its store.`,
        );
      }
      await images.setPin(entry, release);
    }
    this.#s.record({ stage: "ui-pin", entry: name, ip: clientIp(req), detail: release });
    res.writeHead(303, { Location: back }).end();
  }

  /** POST /ui/machines/MAC/reset-disk: discard the machine's disk for the image it boots. */
  async resetDisk(req: IncomingMessage, res: ServerResponse, text: string): Promise<void> {
    const mac = macFromQuery(text);
    if (!mac) throw new HttpError(404, `"${text}" is not a MAC address`);
    const back = `/ui/machines/${encodeURIComponent(mac)}`;
    const form = await this.#s.auth.authorized(req, res, back);
    if (!form) return;
    const entry = this.#s.config.entries.get(form.get("entry") ?? "");
    const images = this.#s.images();
    if (entry?.kind !== "image" || !images) {
      return this.#s.auth.refuse(req, res, back, 404, `No image entry ${form.get("entry") ?? ""}.`);
    }
    const had = await images.resetDisk(entry, mac);
    this.#s.record({
      stage: "ui-reset-disk",
      mac,
      entry: entry.name,
      ip: clientIp(req),
      detail: had ? "disk discarded" : "no disk to discard",
    });
    res.writeHead(303, { Location: back }).end();
  }
}
