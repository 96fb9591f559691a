// The doctor's network checks: the boot interface (there, up, with the address), the inetboot
// answering on the configured HTTP port (its own index and /healthz), and who holds each port
// the configuration uses — that inetboot, another program, or nobody (then: how to start it).
import { readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import type { ServeConfig } from "../config.ts";
import { fail, ok, warn } from "./check.ts";
import type { Check, Prober } from "./check.ts";
import { commandLine, listeners } from "./sockets.ts";
import type { Listener } from "./sockets.ts";

const IFF_UP = 0x1;

export function interfaceCheck(config: ServeConfig): Check | null {
  const name = config.listen.interface;
  if (!name) return null;
  const check = `interface ${name}`;
  let flags: number;
  let operstate: string;
  try {
    flags = Number(readFileSync(`/sys/class/net/${name}/flags`, "utf8").trim());
    operstate = readFileSync(`/sys/class/net/${name}/operstate`, "utf8").trim();
  } catch {
    const have = Object.keys(networkInterfaces()).join(", ");
    return fail(
      check,
      `no interface ${name} on this host (it has: ${have})`,
      `set listen.interface to the boot network's interface`,
    );
  }
  if (!(flags & IFF_UP))
    return fail(check, `${name} is down`, `bring it up: ip link set ${name} up`);
  const v4 = (networkInterfaces()[name] ?? []).filter((i) => i.family === "IPv4");
  const want = config.listen.address;
  if (want && !v4.some((i) => i.address === want)) {
    return fail(
      check,
      `${name} does not have ${want} (it has ${v4.map((i) => i.address).join(", ") || "no IPv4 address"})`,
      `ip addr add ${want}/24 dev ${name} (your prefix), or fix listen.address`,
    );
  }
  if (!want && v4.length === 0)
    return fail(
      check,
      `${name} has no IPv4 address`,
      `give it one (ip addr add ADDRESS/PREFIX dev ${name}) or set listen.address`,
    );
  const address = want ?? v4[0].address;
  // "unknown" is what bridges without a carrier-aware driver and tunnels report.
  if (operstate === "down" || operstate === "lowerlayerdown")
    return warn(
      check,
      `${name} is up with ${address} but has no carrier (operstate ${operstate})`,
      `connect its cable (or, for a bridge, add a port to it): no machine can reach the server`,
    );
  return ok(check, `${name} is up with ${address}`);
}

/** What answered on the configured HTTP port. */
export interface RunningServer {
  /** "inetboot": our index answered; "other": something else; "none": nothing. */
  kind: "inetboot" | "other" | "none";
  url: string;
  /** The configuration the running server reports (its index's `configuration:` line). */
  source?: string;
  /** Its pid, when the HTTP port's owner could be told. */
  pid?: number;
  detail: string;
}

/** Asks the server on `http.port` what it is: its text index (with the read token) and health. */
export async function findServer(
  config: ServeConfig,
  prober: Prober,
  socks: Listener[],
): Promise<RunningServer> {
  const host = config.http.address === "0.0.0.0" ? "127.0.0.1" : config.http.address;
  const url = `http://${host}:${config.http.port}`;
  const token = config.ui.readToken;
  const index = await prober.probe(`${url}/`, {
    method: "GET",
    headers: { Accept: "text/plain", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    readBody: 4096,
  });
  const pid = socks.find((l) => l.proto === "tcp" && l.port === config.http.port)?.process?.pid;
  if (index.status === null) return { kind: "none", url, detail: index.error ?? "no answer" };
  if (index.status !== 200 || !index.body?.startsWith("inetboot boot server")) {
    const what =
      index.status === 401
        ? "asks for a read token the configuration does not hold"
        : `answers ${index.status}, not an inetboot index`;
    return { kind: "other", url, pid, detail: `${url}/ ${what}` };
  }
  const source = /^configuration: (.*)$/m.exec(index.body)?.[1];
  const health = await prober.probe(`${url}/healthz`, { method: "GET", readBody: 64 });
  const healthy = health.status === 200 && health.body?.trim() === "ok";
  return {
    kind: "inetboot",
    url,
    source,
    pid,
    detail: `inetboot${pid ? ` (pid ${pid})` : ""} at ${url} serving ${source ?? "?"}; /healthz ${healthy ? "ok" : `answered ${health.status ?? health.error}`}`,
  };
}

export function serverCheck(server: RunningServer, config: ServeConfig, start: string): Check {
  if (server.kind === "none")
    return fail("server", `nothing answers at ${server.url} (${server.detail})`, start);
  if (server.kind === "other")
    return fail(
      "server",
      server.detail,
      `another program holds http.port ${config.http.port}: stop it or set http.port`,
    );
  if (!server.detail.endsWith("/healthz ok"))
    return fail("server", server.detail, "look at the server's log (it runs but is not healthy)");
  if (server.source && config.source && !sameConfig(server.source, config.source))
    return warn(
      "server",
      server.detail,
      `it runs another configuration than ${config.source}: restart it with --config ${config.source} (or run doctor with --config ${server.source})`,
    );
  return ok("server", server.detail);
}

function sameConfig(a: string, b: string): boolean {
  const base = (p: string): string => p.split("/").pop() ?? p;
  return base(a) === base(b);
}

/** The ports the configuration uses: [check name, port, protocol, the setting]. */
export function configuredPorts(config: ServeConfig): [string, number, "tcp" | "udp", string][] {
  const out: [string, number, "tcp" | "udp", string][] = [];
  if (config.dhcp.mode !== "off") {
    out.push(["dhcp", config.dhcp.port, "udp", "dhcp.port"]);
    out.push(["proxy", config.dhcp.proxyPort, "udp", "dhcp.proxyPort"]);
  }
  if (config.tftp.enabled) out.push(["tftp", config.tftp.port, "udp", "tftp.port"]);
  out.push(["http", config.http.port, "tcp", "http.port"]);
  const exported = [...config.entries.values()].some(
    (e) => e.kind === "image" || (e.kind === "iso" && e.lazy),
  );
  if (exported) out.push(["nbd", config.nbd.port, "tcp", "nbd.port"]);
  // Port 0 is "any free port": nothing to look for.
  return out.filter(([, port]) => port !== 0);
}

/** One check per configured port: held by the running inetboot, by something else, or free. */
export async function portChecks(
  config: ServeConfig,
  server: RunningServer,
  socks: { list: Listener[]; via: string },
  start: string,
): Promise<Check[]> {
  const out: Check[] = [];
  for (const [what, port, proto, setting] of configuredPorts(config)) {
    const name = `port ${what} ${port}/${proto}`;
    const held = socks.list.filter((l) => l.port === port && l.proto === proto);
    if (held.length === 0) {
      out.push(
        server.kind === "inetboot"
          ? fail(
              name,
              `free: the running inetboot does not listen on it`,
              `restart the server with this configuration (${setting} or the section was changed since it started)`,
            )
          : fail(name, "free: the server is not running", start),
      );
      continue;
    }
    const owner = held.find((l) => l.process)?.process;
    if (!owner) {
      out.push(
        server.kind === "inetboot"
          ? ok(name, `bound (${socks.via} cannot tell by whom; inetboot answers on HTTP)`)
          : warn(
              name,
              `taken by a process ${socks.via} cannot name`,
              "run inetboot doctor as root to see which, then stop it or change " + setting,
            ),
      );
      continue;
    }
    if (server.pid !== undefined && owner.pid === server.pid) {
      out.push(ok(name, `bound by the running inetboot (pid ${owner.pid})`));
      continue;
    }
    const cmd = await commandLine(owner.pid);
    const isInetboot = /inetboot/.test(cmd) && /\bserve\b/.test(cmd);
    // ss names the thread (node's is "MainThread"): the program's own name says more.
    const program = cmd ? (cmd.split(" ")[0].split("/").pop() ?? owner.name) : owner.name;
    out.push(
      fail(
        name,
        `taken by ${program} (pid ${owner.pid}${cmd ? `: ${cmd}` : ""})`,
        isInetboot
          ? `another inetboot serve holds it: stop that one (kill ${owner.pid}) or change ${setting}`
          : `stop ${program} (or keep it off this port) or change ${setting}`,
      ),
    );
  }
  return out;
}

export { listeners };
