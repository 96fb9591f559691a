// Test networks in network namespaces: a "server" namespace with a bridge (the boot LAN), other
// hosts joined to it by veth pairs, tap devices for QEMU. Everything is removed after the test;
// nothing touches the host's own interfaces.
import { execFileSync, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { CLI, requireOrSkip } from "./helpers.ts";
import type { Cleanup, Skipper } from "./helpers.ts";

function ip(args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

export function canUseNetns(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync("ip", ["netns", "list"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Skips (or under CI=true fails) when namespaces cannot be made here. */
export function requireNetns(t: Skipper): boolean {
  return canUseNetns() || requireOrSkip(t, "network namespaces need root and iproute2");
}

export interface Host {
  ns: string;
  /** The host's interface on the LAN. */
  ifname: string;
  address?: string;
}

export class TestLan {
  readonly id = randomBytes(3).toString("hex");
  /** The server namespace; the bridge `br0` in it is the LAN. */
  readonly server: string;
  readonly serverAddress: string;
  readonly prefix: string;
  readonly prefixLength: number;
  readonly #namespaces: string[] = [];
  readonly #children = new Set<ChildProcess>();
  #hosts = 0;

  /** `subnet` is the first three octets; the server is .1 with `prefixLength` (24 or wider). */
  constructor(subnet = "10.99.0", prefixLength = 24) {
    this.prefix = subnet;
    this.prefixLength = prefixLength;
    this.server = `ibsrv-${this.id}`;
    this.serverAddress = `${subnet}.1`;
    this.#addNs(this.server);
    this.exec(this.server, "ip", ["link", "set", "lo", "up"]);
    this.exec(this.server, "ip", ["link", "add", "br0", "type", "bridge", "forward_delay", "0"]);
    this.exec(this.server, "ip", [
      "addr",
      "add",
      `${this.serverAddress}/${prefixLength}`,
      "dev",
      "br0",
    ]);
    this.exec(this.server, "ip", ["link", "set", "br0", "up"]);
  }

  #addNs(name: string): void {
    ip(["netns", "add", name]);
    this.#namespaces.push(name);
  }

  exec(ns: string, cmd: string, args: string[]): string {
    return execFileSync("ip", ["netns", "exec", ns, cmd, ...args], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  }

  /** A new host (namespace) on the LAN, with `address` or none (it will use DHCP). */
  addHost(address?: string): Host {
    const n = ++this.#hosts;
    const ns = `ibh${n}-${this.id}`;
    this.#addNs(ns);
    const outside = `vb${n}${this.id}`;
    ip([
      "link",
      "add",
      outside,
      "netns",
      this.server,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns,
    ]);
    this.exec(this.server, "ip", ["link", "set", outside, "master", "br0", "up"]);
    this.exec(ns, "ip", ["link", "set", "lo", "up"]);
    this.exec(ns, "ip", ["link", "set", "eth0", "up"]);
    if (address)
      this.exec(ns, "ip", ["addr", "add", `${address}/${this.prefixLength}`, "dev", "eth0"]);
    return { ns, ifname: "eth0", address };
  }

  /** A tap device on the LAN for QEMU (run QEMU in the server namespace). */
  addTap(): string {
    const name = `tap${++this.#hosts}`;
    this.exec(this.server, "ip", ["tuntap", "add", "dev", name, "mode", "tap"]);
    this.exec(this.server, "ip", ["link", "set", name, "master", "br0", "up"]);
    return name;
  }

  /** Starts a long-running process in a namespace; it is killed when the LAN is torn down. */
  spawn(
    ns: string,
    cmd: string,
    args: string[],
    env: NodeJS.ProcessEnv = {},
    options: { quiet?: boolean } = {},
  ): ChildProcess {
    // quiet: output discarded, for callers that block their event loop (an unread pipe would
    // stall a chatty server such as dnsmasq).
    const child = spawn("ip", ["netns", "exec", ns, cmd, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", options.quiet ? "ignore" : "pipe", options.quiet ? "ignore" : "pipe"],
    });
    this.#children.add(child);
    child.on("exit", () => this.#children.delete(child));
    return child;
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.#children].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once("exit", () => resolve());
            c.kill("SIGTERM");
            setTimeout(() => c.kill("SIGKILL"), 3000).unref();
          }),
      ),
    );
    for (const ns of this.#namespaces.reverse()) {
      try {
        ip(["netns", "del", ns]);
      } catch {
        // already gone
      }
    }
  }
}

/**
 * dnsmasq as the LAN's existing DHCP server on a host of its own (PREFIX.2), leasing
 * PREFIX.50-60 and logging each transaction; `log()` is what it said so far.
 */
export function lanDnsmasq(lan: TestLan, dir: string): { log: () => string; ready: Promise<void> } {
  const other = lan.addHost(`${lan.prefix}.2`);
  const dnsmasq = lan.spawn(other.ns, "dnsmasq", [
    "--no-daemon",
    "--conf-file=/dev/null",
    "--port=0",
    `--interface=${other.ifname}`,
    "--bind-interfaces",
    `--dhcp-range=${lan.prefix}.50,${lan.prefix}.60,255.255.255.0,1h`,
    `--dhcp-leasefile=${join(dir, "dnsmasq.leases")}`,
    "--log-dhcp",
  ]);
  let log = "";
  // Ready once it has logged its range (a fixed wait was too short for a loaded CI host).
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`dnsmasq did not start within 20 s:\n${log}`)),
      20_000,
    );
    const check = (): void => {
      if (!/DHCP, IP range/.test(log)) return;
      clearTimeout(timer);
      resolve();
    };
    dnsmasq.stderr?.on("data", (d: Buffer) => {
      log += d.toString();
      check();
    });
    dnsmasq.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`dnsmasq exited (${code}):\n${log}`));
    });
  });
  ready.catch(() => {}); // awaited by the tests that need it
  return { log: () => log, ready };
}

export function createLan(t: Cleanup, subnet?: string): TestLan {
  const lan = new TestLan(subnet);
  t.after(() => lan.close());
  return lan;
}

export interface ServeProcess {
  child: ChildProcess;
  /** Structured log lines seen so far (pino JSON). */
  logs: Record<string, unknown>[];
  stderr: () => string;
  /** Resolves with the first log line for which `pred` holds. */
  waitFor: (
    pred: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ) => Promise<Record<string, unknown>>;
}

/**
 * Runs `inetboot serve --config FILE` in the LAN's server namespace and waits until it is up.
 * `command` is how inetboot is started (default: this Node with the checkout's CLI).
 */
export async function startServe(
  lan: TestLan,
  config: string,
  env: NodeJS.ProcessEnv = {},
  command: string[] = [process.execPath, CLI],
): Promise<ServeProcess> {
  const [cmd, ...pre] = command;
  const child = lan.spawn(lan.server, cmd, [...pre, "serve", "--config", config], env);
  const logs: Record<string, unknown>[] = [];
  let err = "";
  const waiters = new Set<() => void>();
  let buffered = "";
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
    buffered += d.toString();
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.startsWith("{")) {
        try {
          logs.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not JSON
        }
      }
    }
    for (const w of waiters) w();
  });
  const waitFor: ServeProcess["waitFor"] = (pred, timeoutMs = 30_000) =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = logs.find(pred);
        if (hit) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for a serve log line; stderr:\n${err.slice(-4000)}`));
      }, timeoutMs);
      if (!check()) waiters.add(check);
    });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`inetboot serve did not start:\n${err}`)),
      20_000,
    );
    const onData = (): void => {
      if (err.includes("inetboot serve:")) {
        clearTimeout(timer);
        child.stderr?.off("data", onData);
        resolve();
      }
    };
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`inetboot serve exited with ${code}:\n${err}`));
    });
  });
  return { child, logs, stderr: () => err, waitFor };
}
