// The machine registry from the command line, over a running server's API (/api/v1):
// `inetboot machines ls|show|set|rm`, `inetboot next MAC ENTRY`, `inetboot reload`. The server
// is --server URL (or $INETBOOT_SERVER, default http://127.0.0.1:8080); writes need its write
// token from --token-file or $INETBOOT_TOKEN. Tables for people, --json for scripts.
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { collect } from "./options.ts";
import { printJson } from "./output.ts";

interface ApiFlags {
  server?: string;
  tokenFile?: string;
  json?: boolean;
}

interface Machine {
  mac: string;
  version: number;
  updated: string;
  hostname?: string;
  labels?: Record<string, string>;
  entry?: string;
  next?: string;
  notes?: string;
}

function server(flags: ApiFlags): string {
  return (flags.server ?? process.env.INETBOOT_SERVER ?? "http://127.0.0.1:8080").replace(
    /\/+$/,
    "",
  );
}

function token(flags: ApiFlags): string | undefined {
  if (flags.tokenFile) return readFileSync(flags.tokenFile, "utf8").trim();
  return process.env.INETBOOT_TOKEN || undefined;
}

/** What the server refused, with its status. */
class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** A request to the API; its JSON and ETag, or an ApiError saying what the server said. */
async function api(
  flags: ApiFlags,
  method: string,
  path: string,
  body?: unknown,
  ifMatch?: string,
): Promise<{ status: number; json: unknown; etag: string | null }> {
  const url = `${server(flags)}/api/v1${path}`;
  const t = token(flags);
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: {
        ...(t ? { Authorization: `Bearer ${t}` } : {}),
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
        ...(ifMatch ? { "If-Match": ifMatch } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new Error(
      `cannot reach ${server(flags)} (${(err as Error).message}): is inetboot serve running there? (--server URL or $INETBOOT_SERVER)`,
      { cause: err },
    );
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { error: text.trim() };
  }
  if (!res.ok) {
    const e = json as { error?: string; field?: string } | null;
    const hint =
      res.status === 401 ? " (the write token: --token-file FILE or $INETBOOT_TOKEN)" : "";
    throw new ApiError(
      res.status,
      `${method} ${url}: ${res.status} ${e?.error ?? res.statusText}${e?.field ? ` [${e.field}]` : ""}${hint}`,
    );
  }
  return { status: res.status, json, etag: res.headers.get("etag") };
}

const labelsText = (l?: Record<string, string>): string =>
  Object.entries(l ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",");

function table(machines: Machine[]): string {
  const rows = [["MAC", "HOSTNAME", "ENTRY", "NEXT", "LABELS", "VERSION"]];
  for (const m of machines) {
    rows.push([
      m.mac,
      m.hostname ?? "",
      m.entry ?? "(rules)",
      m.next ?? "",
      labelsText(m.labels),
      String(m.version),
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function show(m: Machine, flags: ApiFlags): void {
  if (flags.json) return printJson(m);
  console.log(table([m]));
  if (m.notes) console.log(`notes: ${m.notes}`);
}

const withApi = (c: Command): Command =>
  c
    .option(
      "--server <url>",
      "the inetboot serve to talk to (default $INETBOOT_SERVER or http://127.0.0.1:8080)",
    )
    .option("--token-file <file>", "the server's write token (ui.token; default $INETBOOT_TOKEN)")
    .option("--json", "print JSON");

/** "rack=r7" → ["rack", "r7"]. */
function label(text: string): [string, string] {
  const at = text.indexOf("=");
  if (at < 1) throw new Error(`--label ${text}: expected KEY=VALUE`);
  return [text.slice(0, at), text.slice(at + 1)];
}

export function registerMachinesCommands(program: Command): void {
  const machines = program
    .command("machines")
    .description("the machine registry of a running inetboot serve (its API)");
  withApi(machines.command("ls").description("list the registry's machines")).action(
    async (flags: ApiFlags) => {
      const { json } = await api(flags, "GET", "/machines");
      const list = (json as { machines: Machine[] }).machines;
      if (flags.json) printJson(list);
      else
        console.log(
          list.length
            ? table(list)
            : "no machines in the registry (inetboot machines set MAC … adds one)",
        );
    },
  );
  withApi(machines.command("show").description("one machine's record").argument("<mac>")).action(
    async (mac: string, flags: ApiFlags) =>
      show(
        (await api(flags, "GET", `/machines/${encodeURIComponent(mac)}`)).json as Machine,
        flags,
      ),
  );
  withApi(
    machines
      .command("set")
      .description("make or change a machine's record (only the fields given change)")
      .argument("<mac>")
      .option("--hostname <name>", "its host name (templates, DHCP option 12)")
      .option("--entry <name>", "the entry it boots (instead of the rules); --entry '' clears it")
      .option("--label <key=value>", "a label (repeatable; value '' removes it)", collect, [])
      .option("--notes <text>", "free text"),
  ).action(
    async (
      mac: string,
      flags: ApiFlags & { hostname?: string; entry?: string; label: string[]; notes?: string },
    ) => {
      const path = `/machines/${encodeURIComponent(mac)}`;
      // Only "not found" means a new record; the change goes with the ETag read, so a change
      // made meanwhile is refused (412) rather than overwritten.
      const got = await api(flags, "GET", path).catch((err: unknown) => {
        if (err instanceof ApiError && err.status === 404) return null;
        throw err;
      });
      const current = got ? (got.json as Machine) : null;
      const labels = { ...current?.labels };
      for (const [k, v] of flags.label.map(label)) {
        if (v === "") delete labels[k];
        else labels[k] = v;
      }
      const fields = {
        ...(flags.hostname !== undefined ? { hostname: flags.hostname || null } : {}),
        ...(flags.entry !== undefined ? { entry: flags.entry || null } : {}),
        ...(flags.notes !== undefined ? { notes: flags.notes || null } : {}),
        ...(flags.label.length ? { labels } : {}),
      };
      const r = got
        ? await api(flags, "PATCH", path, fields, got.etag ?? undefined)
        : await api(flags, "PUT", path, fields);
      show(r.json as Machine, flags);
    },
  );
  withApi(
    machines
      .command("rm")
      .description("remove a machine's record (the rules choose for it again)")
      .argument("<mac>"),
  ).action(async (mac: string, flags: ApiFlags) => {
    await api(flags, "DELETE", `/machines/${encodeURIComponent(mac)}`);
    if (flags.json) printJson({ removed: mac });
    else console.log(`removed ${mac}`);
  });
  withApi(
    program
      .command("next")
      .description("the entry a machine's next boot uses, once (then its entry or rules again)")
      .argument("<mac>")
      .argument("[entry]", "the entry; omit it with --clear")
      .option("--clear", "clear the next boot"),
  ).action(
    async (mac: string, entry: string | undefined, flags: ApiFlags & { clear?: boolean }) => {
      if (!entry && !flags.clear) throw new Error("give an ENTRY, or --clear");
      const path = `/machines/${encodeURIComponent(mac)}/next`;
      const r = flags.clear
        ? await api(flags, "DELETE", path)
        : await api(flags, "PUT", path, { entry });
      if (flags.json) return printJson(r.json);
      console.log(
        flags.clear
          ? `${mac}: next boot cleared`
          : `${mac}: next boot ${entry}, then ${(r.json as Machine).entry ?? "its rules"}`,
      );
    },
  );
  withApi(
    program
      .command("reload")
      .description("make a running inetboot serve read its configuration file again"),
  ).action(async (flags: ApiFlags) => {
    const { json } = await api(flags, "POST", "/reload");
    if (flags.json) printJson(json);
    else console.log(`reloaded: ${(json as { changes: string }).changes}`);
  });
}
