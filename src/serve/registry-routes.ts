// The machine API, /api/v1/…: the registry's records (list, get, put, patch, delete), a
// machine's next boot (set, clear), a machine's disk reset and a configuration reload. JSON in
// and out; errors are {"error", "field"?} with the status; writes need the write token as a
// Bearer token and take If-Match against the record's ETag; every change is an event on the
// machine's timeline. The OpenAPI document describing it is served at /api/v1/openapi.json.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../lib/log.ts";
import type { Entry, ServeConfig } from "./config.ts";
import type { EventInput } from "./events.ts";
import { clientIp, HttpError, macFromQuery } from "./http-util.ts";
import type { ImageExports } from "./image-exports.ts";
import { checkRecord, MachineRegistry, RegistryError } from "./machine-registry.ts";
import type { RegistryRecord } from "./machine-registry.ts";
import { OPENAPI } from "./openapi.ts";
import type { ListedRelease } from "../store/list.ts";
import { readBody } from "./people-auth.ts";
import type { PeopleAuth } from "./people-auth.ts";

/** A JSON body read at most. */
const MAX_JSON = 64 * 1024;

export interface RegistrySources {
  config: ServeConfig;
  registry(): MachineRegistry | null;
  images(): ImageExports | null;
  record(input: EventInput): void;
  auth: PeopleAuth;
  log: Logger;
  /** Reads the configuration file again and swaps it in; what changed (null: no file). */
  reload(): Promise<string> | null;
  /** The releases in an image entry's store (for pins). */
  listing(entry: Extract<Entry, { kind: "image" }>): Promise<ListedRelease[]>;
}

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = status === 204 ? "" : JSON.stringify(body, null, 1) + "\n";
  res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Cache-Control": "no-store",
    ...headers,
  });
  res.end(text);
}

export class RegistryRoutes {
  readonly #s: RegistrySources;
  constructor(sources: RegistrySources) {
    this.#s = sources;
  }

  /** Runs a handler; RegistryErrors and HttpErrors become JSON errors. */
  async handle(res: ServerResponse, fn: () => Promise<void> | void): Promise<void> {
    try {
      await fn();
    } catch (err) {
      const status = err instanceof RegistryError || err instanceof HttpError ? err.status : 500;
      const headers: Record<string, string> =
        status === 401 ? { "WWW-Authenticate": 'Bearer realm="inetboot"' } : {};
      if (status === 500) this.#s.log.error({ err }, "api request failed");
      return json(
        res,
        status,
        {
          error:
            status === 500
              ? `the server failed: ${(err as Error).message}`
              : (err as Error).message,
          ...(err instanceof RegistryError && err.field !== undefined ? { field: err.field } : {}),
        },
        headers,
      );
    }
  }

  openapi(_req: IncomingMessage, res: ServerResponse): void {
    json(res, 200, OPENAPI);
  }

  #registry(): MachineRegistry {
    const r = this.#s.registry();
    if (!r)
      throw new RegistryError(503, "the registry is not open (the server is starting or stopping)");
    return r;
  }

  #mac(text: string): string {
    const mac = macFromQuery(text);
    if (!mac) throw new RegistryError(400, `"${text.slice(0, 40)}" is not a MAC address`, "mac");
    return mac;
  }

  list(_req: IncomingMessage, res: ServerResponse): Promise<void> {
    return this.handle(res, () => json(res, 200, { machines: this.#registry().list() }));
  }

  get(_req: IncomingMessage, res: ServerResponse, text: string): Promise<void> {
    return this.handle(res, () => {
      const mac = this.#mac(text);
      const r = this.#registry().get(mac);
      if (!r) throw new RegistryError(404, `no registry record for ${mac}`);
      json(res, 200, r, { ETag: MachineRegistry.etag(r) });
    });
  }

  /** The write token, the JSON body (or undefined without one), If-Match. */
  async #write(
    req: IncomingMessage,
    withBody: boolean,
  ): Promise<{ body: unknown; ifMatch?: string }> {
    const refused = this.#s.auth.apiWrite(req);
    if (refused) throw new RegistryError(refused.status, refused.message);
    let body: unknown;
    if (withBody) {
      // JSON only: a form or text/plain body is what another site's page can send.
      if (!/^application\/json\b/i.test(req.headers["content-type"] ?? ""))
        throw new RegistryError(415, "expected Content-Type: application/json", "Content-Type");
      const text = await readBody(req, MAX_JSON);
      if (text === null) throw new RegistryError(413, `the body is over ${MAX_JSON} bytes`);
      try {
        body = JSON.parse(text);
      } catch (err) {
        throw new RegistryError(400, `the body is not JSON: ${(err as Error).message}`, "");
      }
    }
    const ifMatch = req.headers["if-match"];
    return { body, ifMatch: typeof ifMatch === "string" ? ifMatch : undefined };
  }

  #entries(): (name: string) => boolean {
    const entries = this.#s.config.entries;
    return (name) => entries.has(name);
  }

  #changed(req: IncomingMessage, mac: string, what: string, r: RegistryRecord | null): void {
    this.#s.record({
      stage: "api-machine",
      mac,
      detail: `${what} from ${clientIp(req)}${r ? ` (version ${r.version})` : ""}`,
    });
  }

  /** PUT replaces the record; PATCH changes the fields given (null clears one). */
  put(req: IncomingMessage, res: ServerResponse, text: string, partial: boolean): Promise<void> {
    return this.handle(res, async () => {
      const mac = this.#mac(text);
      const { body, ifMatch } = await this.#write(req, true);
      const fields = checkRecord(body, this.#entries(), partial);
      let created = false;
      const r = await this.#registry().update(mac, ifMatch, (current) => {
        if (partial && !current)
          throw new RegistryError(404, `no registry record for ${mac} (PUT makes one)`);
        created = !current;
        return partial ? { ...current, ...fields } : fields;
      });
      this.#changed(
        req,
        mac,
        created ? "record made" : partial ? "record changed" : "record replaced",
        r,
      );
      json(res, created ? 201 : 200, r, { ETag: MachineRegistry.etag(r!) });
    });
  }

  delete(req: IncomingMessage, res: ServerResponse, text: string): Promise<void> {
    return this.handle(res, async () => {
      const mac = this.#mac(text);
      const { ifMatch } = await this.#write(req, false);
      await this.#registry().update(mac, ifMatch, () => null);
      this.#changed(req, mac, "record removed", null);
      json(res, 204, null);
    });
  }

  /** PUT /api/v1/machines/MAC/next {"entry": NAME}; DELETE clears it. A record is made if needed. */
  next(req: IncomingMessage, res: ServerResponse, text: string, clear: boolean): Promise<void> {
    return this.handle(res, async () => {
      const mac = this.#mac(text);
      const { body, ifMatch } = await this.#write(req, !clear);
      let next: string | undefined;
      if (!clear) {
        const fields = checkRecord(body, this.#entries(), true);
        if (!fields.entry || Object.keys(body as object).length !== 1)
          throw new RegistryError(400, 'expected {"entry": NAME}', "entry");
        next = fields.entry;
      }
      let created = false;
      const r = await this.#registry().update(mac, ifMatch, (current) => {
        if (clear && !current) throw new RegistryError(404, `no registry record for ${mac}`);
        created = !current;
        return { ...current, next };
      });
      this.#changed(req, mac, clear ? "next boot cleared" : `next boot: ${next}`, r);
      json(res, created ? 201 : 200, r, { ETag: MachineRegistry.etag(r!) });
    });
  }

  /** POST /api/v1/machines/MAC/reset-disk {"entry": NAME}: the machine's disk for an image entry. */
  resetDisk(req: IncomingMessage, res: ServerResponse, text: string): Promise<void> {
    return this.handle(res, async () => {
      const mac = this.#mac(text);
      const { body } = await this.#write(req, true);
      const name = (body as { entry?: unknown } | null)?.entry;
      const entry: Entry | undefined =
        typeof name === "string" ? this.#s.config.entries.get(name) : undefined;
      if (entry?.kind !== "image")
        throw new RegistryError(400, "expected the name of an image entry", "entry");
      const images = this.#s.images();
      if (!images) throw new RegistryError(503, "the NBD server is not running");
      const had = await images.resetDisk(entry, mac);
      this.#changed(req, mac, `disk of ${entry.name} reset${had ? "" : " (it had none)"}`, null);
      json(res, 200, { mac, entry: entry.name, had });
    });
  }

  /**
   * PUT /api/v1/images/ENTRY/pin {"release": DIGEST}: the entry's next boots open that release
   * of its store (a roll-back); DELETE follows the latest again.
   */
  pin(req: IncomingMessage, res: ServerResponse, name: string, clear: boolean): Promise<void> {
    return this.handle(res, async () => {
      const { body } = await this.#write(req, !clear);
      const entry = this.#s.config.entries.get(name);
      if (entry?.kind !== "image") throw new RegistryError(404, `no image entry named "${name}"`);
      const images = this.#s.images();
      if (!images) throw new RegistryError(503, "the NBD server is not running");
      let release: string | null = null;
      if (!clear) {
        const given = (body as { release?: unknown } | null)?.release;
        if (typeof given !== "string" || !/^[0-9a-f]{64}$/.test(given))
          throw new RegistryError(400, "expected a release digest (64 hex digits)", "release");
        const known = (await this.#s.listing(entry)).some((r) => r.digest === given);
        if (!known)
          throw new RegistryError(
            400,
            `${given} is not a release of ${entry.image.source} in its store`,
            "release",
          );
        release = given;
      }
      await images.setPin(entry, release);
      this.#s.record({
        stage: "api-pin",
        entry: name,
        ip: clientIp(req),
        detail: release ?? "latest",
      });
      json(res, 200, { entry: name, pinned: release });
    });
  }

  reload(req: IncomingMessage, res: ServerResponse): Promise<void> {
    return this.handle(res, async () => {
      await this.#write(req, false);
      const running = this.#s.reload();
      if (!running)
        throw new RegistryError(
          409,
          "this server runs on built-in defaults: there is no file to reload",
        );
      try {
        json(res, 200, { reloaded: true, changes: await running });
      } catch (err) {
        throw new RegistryError(422, (err as Error).message);
      }
    });
  }
}
