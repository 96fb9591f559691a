// Shared test helpers: temporary folders, running the CLI, real peer tools (installed from
// Debian when missing and root; skipped loudly otherwise, and failing under CI=true).
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";

export const REPO = new URL("..", import.meta.url).pathname;
export const CLI = join(REPO, "bin", "inetboot.js");

export function tempDir(t: TestContext, prefix = "inetboot-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function run(
  cmd: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: options.env ?? process.env, cwd: options.cwd });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Like run(), but throws with the command's stderr when it exits non-zero. */
export async function runOk(cmd: string, args: string[]): Promise<RunResult> {
  const r = await run(cmd, args);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${r.code}): ${r.stderr}`);
  return r;
}

/** Runs the inetboot CLI with an isolated anti-rollback state unless the env says otherwise. */
export function inetboot(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
}

/** Like inetboot(), but fails the test with the command's output when it exits non-zero. */
export async function inetbootOk(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const r = await inetboot(args, env);
  if (r.code !== 0) {
    throw new Error(
      `inetboot ${args.join(" ")} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
  }
  return r;
}

function have(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes sure a command from a Debian package is available. Returns false (after t.skip with the
 * reason) when it cannot be had; under CI=true that is a failure instead.
 */
export function requireTool(t: TestContext, cmd: string, pkg: string): boolean {
  return requireThing(t, () => have(cmd) || have(`/usr/sbin/${cmd}`), cmd, pkg);
}

/** Like requireTool, for a file a Debian package installs (firmware, ROMs). */
export function requireFile(t: TestContext, path: string, pkg: string): boolean {
  return requireThing(t, () => existsSync(path), path, pkg);
}

function requireThing(t: TestContext, found: () => boolean, cmd: string, pkg: string): boolean {
  if (found()) return true;
  if (process.getuid?.() === 0 && have("apt-get")) {
    try {
      execFileSync(
        "sh",
        [
          "-c",
          `apt-get install -y -qq ${pkg} || (apt-get update -qq && apt-get install -y -qq ${pkg})`,
        ],
        {
          stdio: "ignore",
          env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
        },
      );
    } catch {
      // reported below
    }
    if (found()) return true;
  }
  const reason = `SKIPPED: ${cmd} (Debian package ${pkg}) is not installed and could not be installed (need root and apt)`;
  if (process.env.CI === "true") throw new Error(`${reason}; under CI=true a skip is a failure`);
  t.skip(reason);
  return false;
}

/** Writes a test image from parts: numbers are that many random bytes, {zero: n} n zero bytes. */
export function writeImage(path: string, parts: (number | { zero: number } | Buffer)[]): Buffer {
  const buffers = parts.map((p) =>
    typeof p === "number" ? randomBytes(p) : Buffer.isBuffer(p) ? p : Buffer.alloc(p.zero),
  );
  const data = Buffer.concat(buffers);
  writeFileSync(path, data);
  return data;
}

/** Compressible, not-random test data: text-like lines with some variation. */
export function textLike(bytes: number, seed = 1): Buffer {
  const out = Buffer.alloc(bytes);
  let x = seed >>> 0;
  let pos = 0;
  while (pos < bytes) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const line = `line ${x % 100000} value=${(x >>> 8) % 977} path=/usr/lib/x86_64-linux-gnu/lib${x % 301}.so\n`;
    pos += out.write(line, pos);
  }
  return out;
}
