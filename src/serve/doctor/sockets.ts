// Who listens on a port of this host (this network namespace): `ss` names the process when it
// may (root, or the same user); without `ss` the kernel's /proc/net tables say only that the
// port is taken.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";

export interface Listener {
  proto: "tcp" | "udp";
  port: number;
  /** Local address as shown ("0.0.0.0%br0", "[::]", "127.0.0.1"). */
  address: string;
  /** The owning process, when it could be told. */
  process?: { name: string; pid: number };
}

/** How long `ss` may take. */
export const SS_TIMEOUT_MS = 2000;

/** Every listening TCP socket and bound UDP socket. */
export async function listeners(): Promise<{ list: Listener[]; via: "ss" | "/proc/net" }> {
  const ss = await runSs().catch(() => null);
  if (ss !== null) return { list: parseSs(ss), via: "ss" };
  return { list: await procNet(), via: "/proc/net" };
}

function runSs(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "ss",
      ["-H", "-l", "-n", "-p", "-t", "-u"],
      { timeout: SS_TIMEOUT_MS, maxBuffer: 4 << 20 },
      (err, stdout) => (err ? reject(new Error(err.message)) : resolve(stdout)),
    );
  });
}

/** `udp UNCONN 0 0 0.0.0.0%br0:67 0.0.0.0:* users:(("node",pid=12,fd=21))` per line. */
export function parseSs(text: string): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5 || (cols[0] !== "tcp" && cols[0] !== "udp")) continue;
    const local = cols[4];
    const colon = local.lastIndexOf(":");
    const port = Number(local.slice(colon + 1));
    if (colon < 0 || !Number.isInteger(port)) continue;
    const m = /users:\(\("((?:[^"\\]|\\.)*)",pid=(\d+)/.exec(line);
    out.push({
      proto: cols[0],
      port,
      address: local.slice(0, colon),
      ...(m ? { process: { name: m[1], pid: Number(m[2]) } } : {}),
    });
  }
  return out;
}

/** /proc/net/{tcp,udp}{,6}: listening TCP (state 0A) and bound UDP (07) sockets, no owners. */
async function procNet(): Promise<Listener[]> {
  const out: Listener[] = [];
  for (const [file, proto, state] of [
    ["tcp", "tcp", "0A"],
    ["tcp6", "tcp", "0A"],
    ["udp", "udp", "07"],
    ["udp6", "udp", "07"],
  ] as const) {
    const text = await readFile(`/proc/net/${file}`, "utf8").catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== state) continue;
      const [addr, port] = cols[1].split(":");
      out.push({ proto, port: parseInt(port, 16), address: addr });
    }
  }
  return out;
}

/** A process's command line, shortened (empty when it cannot be read). */
export async function commandLine(pid: number): Promise<string> {
  const raw = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  const text = raw.split("\0").filter(Boolean).join(" ");
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}
