// What people's tools read: /api/* (machines, events and their live stream, images, a boot
// profile, the configuration) and the text index at /. JSON and text; pages are dashboard.ts.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { ServeConfig } from "./config.ts";
import type { EventLog, MachineRecord } from "./events.ts";
import { HttpError, macFromQuery, send } from "./http-util.ts";
import type { ImageExports } from "./image-exports.ts";
import type { MachineRegistry } from "./machine-registry.ts";
import type { IsoEntries } from "./iso-entries.ts";
import type { OnceState } from "./once.ts";
import { ipxeArchNames } from "./plan.ts";
import type { Choice, MachineFacts } from "./plan.ts";
import type { MachineRow } from "./ui/machine-pages.ts";

/** Bytes of events an event-stream client may leave unread before it is disconnected. */
const MAX_STREAM_BACKLOG = 4 << 20;

export interface ApiSources {
  config: ServeConfig;
  events: EventLog;
  images(): ImageExports | null;
  isos: IsoEntries;
  once(): OnceState | null;
  baseUrl(): string;
  tftpPort(): number;
  registry(): MachineRegistry | null;
  /** What a machine with these facts boots (MachinePlans.choose). */
  choose(facts: MachineFacts): Choice & { once?: string };
}

function json(res: ServerResponse, value: unknown): void {
  send(res, 200, JSON.stringify(value, null, 1) + "\n", "application/json");
}

export class ApiRoutes {
  readonly #s: ApiSources;

  constructor(sources: ApiSources) {
    this.#s = sources;
  }

  /** What a known machine would boot next. */
  #nextFor(mac: string): Choice & { once?: string } {
    const record = this.#s.events.machine(mac);
    const facts: MachineFacts = {
      mac,
      uuid: record?.uuid,
      hostname: record?.hostname,
      arch: record?.ipxe ? ipxeArchNames(record.ipxe.buildarch, record.ipxe.platform) : [],
      labels: record?.labels ?? {},
    };
    // As a plan would choose: the registry, then the rules, one-shot entries used up.
    return this.#s.choose(facts);
  }

  /** The machines with what each boots next (for the API and the pages). */
  machineRows(): MachineRow[] {
    return this.#s.events.machines().map((m) => ({
      ...m,
      secureBoot: secureBootOf(m),
      next: this.#nextFor(m.mac),
      registered: this.#s.registry() ? this.#s.registry()?.get(m.mac) !== undefined : undefined,
    }));
  }

  events(_req: IncomingMessage, res: ServerResponse, url: URL): void {
    const since = Number(url.searchParams.get("since") ?? 0) || 0;
    const mac = macFromQuery(url.searchParams.get("mac"));
    json(res, this.#s.events.events({ since, mac }));
  }

  machines(_req: IncomingMessage, res: ServerResponse): void {
    json(res, this.machineRows());
  }

  async images(_req: IncomingMessage, res: ServerResponse): Promise<void> {
    json(res, [...((await this.#s.images()?.stats()) ?? []), ...(await this.#s.isos.stats())]);
  }

  /** What machines read first from an image since the server opened it: a boot profile. */
  async profile(_req: IncomingMessage, res: ServerResponse, entry: string): Promise<void> {
    const text = await this.#s.images()?.profile(entry);
    if (text == null) throw new HttpError(404, `No opened image entry ${entry}`);
    send(res, 200, text, "text/plain; charset=utf-8");
  }

  config(_req: IncomingMessage, res: ServerResponse): void {
    const c = this.#s.config;
    json(res, {
      source: c.source,
      // Templates may hold secrets: their names only.
      entries: [...c.entries.values()].map(({ machineFiles, ...e }) =>
        machineFiles
          ? {
              ...e,
              cloudInit: machineFiles.cloudInit ? Object.keys(machineFiles.cloudInit) : undefined,
              files: [...machineFiles.files.keys()],
            }
          : e,
      ),
      machines: c.machines,
      default: c.default,
      warnings: c.warnings,
    });
  }

  /** Server-sent events: the backlog after `since` (or Last-Event-ID), then each new event. */
  stream(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const mac = macFromQuery(url.searchParams.get("mac"));
    const since = Number(req.headers["last-event-id"] ?? url.searchParams.get("since") ?? 0) || 0;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      Connection: "keep-alive",
    });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const write = (e: { seq: number }): void => {
      // A client that does not read is let go, not buffered for without end.
      if (res.writableLength > MAX_STREAM_BACKLOG) res.destroy();
      else res.write(`id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    res.write("retry: 2000\n\n");
    for (const e of this.#s.events.events({ since, mac })) write(e);
    const unsubscribe = this.#s.events.subscribe((e) => {
      if (!mac || e.mac === mac) write(e);
    });
    const heartbeat = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
    req.socket.setTimeout(0);
    res.once("close", () => {
      clearInterval(heartbeat);
      unsubscribe();
    });
  }

  /** `/`: browsers go to the dashboard; curl gets what the server is and where things are. */
  index(req: IncomingMessage, res: ServerResponse): void {
    if (/text\/html/.test(req.headers.accept ?? "")) {
      res.writeHead(302, { Location: "/ui/machines" }).end();
      return;
    }
    const c = this.#s.config;
    const base = this.#s.baseUrl();
    const lines = [
      "inetboot boot server",
      "",
      `configuration: ${c.source}`,
      `iPXE boot script: ${base}/boot.ipxe`,
      `DHCP: ${c.dhcp.mode}${c.listen.interface ? ` on ${c.listen.interface}` : ""}`,
      `TFTP: ${c.tftp.enabled ? `port ${this.#s.tftpPort()}` : "off"}`,
      `entries: ${[...c.entries.keys()].join(", ")}`,
      `default: ${c.default}`,
      "",
      `dashboard: ${base}/ui/machines`,
      "API: /api/machines /api/events /api/events/stream /api/images /api/images/ENTRY/profile /api/config /metrics",
    ];
    for (const w of c.warnings) lines.push(`warning: ${w}`);
    send(res, 200, lines.join("\n") + "\n", "text/plain; charset=utf-8");
  }
}

/**
 * Whether Secure Boot was in force, as far as the server can tell: unsigned iPXE running on UEFI
 * means it was off; BIOS has none; through shim nothing reports it (the kernel knows: its log
 * says "secureboot: Secure boot enabled").
 */
export function secureBootOf(m: MachineRecord): MachineRow["secureBoot"] {
  if (m.firmware?.kind === "bios" || m.ipxe?.platform === "pcbios") return "none (BIOS)";
  if (m.loader === "iPXE" && m.ipxe?.platform === "efi") return "off (unsigned iPXE ran)";
  return "unknown";
}
