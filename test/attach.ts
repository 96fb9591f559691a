// Runs `inetboot attach` as a real process and waits for the NBD URI it prints.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { CLI } from "./helpers.ts";
import type { Cleanup } from "./helpers.ts";

export interface Attached {
  uri: string;
  child: ChildProcess;
  stderr: () => string;
  /** SIGINT and wait for a clean exit. */
  stop: () => Promise<number | null>;
}

export async function startAttach(
  t: Cleanup,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<Attached> {
  const child = spawn(process.execPath, [CLI, "attach", ...args], {
    env: { ...process.env, ...env },
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  t.after(() => {
    child.kill("SIGKILL");
  });
  const uri = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const line = out.split("\n").find((l) => l.startsWith("nbd"));
      if (line) resolve(line.trim());
    });
    void exited.then((code) =>
      reject(new Error(`inetboot attach exited ${code} before serving:\n${err}`)),
    );
    setTimeout(
      () => reject(new Error(`inetboot attach printed no URI within 30 s:\n${err}`)),
      30_000,
    ).unref();
  });
  return {
    uri,
    child,
    stderr: () => err,
    stop: async () => {
      child.kill("SIGINT");
      return exited;
    },
  };
}
