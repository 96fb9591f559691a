// Stops a process a benchmark started: SIGTERM, then SIGKILL after 3 s; resolves once it exited.
import type { ChildProcess } from "node:child_process";

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  setTimeout(() => child.kill("SIGKILL"), 3000).unref();
  await exited;
}
