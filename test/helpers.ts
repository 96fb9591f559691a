// Shared test helpers: temporary folders, running the CLI, real peer tools (installed from
// Debian when missing and root; skipped loudly otherwise, and failing under CI=true).
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REPO = new URL("..", import.meta.url).pathname;
export const CLI = join(REPO, "bin", "inetboot.js");

/** Where a helper registers its cleanup: a test's context, or a suite fixture's FixtureScope. */
export interface Cleanup {
  after(fn: () => unknown): void;
}

/** Where a capability check skips: a test's context, or a suite fixture's FixtureScope. */
export interface Skipper {
  skip(reason: string): void;
}

/** Both: what the setup helpers (tempDir, createLan, hostKernel, …) take. */
export type Scope = Cleanup & Skipper;

/**
 * The one skip guard, for a capability the test needs and this machine lacks: outside CI it skips
 * the test loudly with `reason` (shown as "SKIPPED: reason") and returns false; under CI=true a
 * skip is a failure, so it throws instead. In a boolean check:
 * `return found() || requireOrSkip(t, why)`; in a test: `{ requireOrSkip(t, why); return; }`.
 */
export function requireOrSkip(t: Skipper, reason: string): false {
  const loud = reason.startsWith("SKIPPED: ") ? reason : `SKIPPED: ${reason}`;
  if (process.env.CI === "true") throw new Error(`${loud}; under CI=true a skip is a failure`);
  t.skip(loud);
  return false;
}

/**
 * The scope of a fixture built once in a describe's before() hook (whose context has neither
 * after() nor skip()): helpers register their cleanups in it, run by close() from the describe's
 * after() hook (newest first); a capability check that skips records the reason, and each it()
 * calls ready(t) to be skipped with it. Under CI=true requireOrSkip throws in before() instead,
 * which fails every test of the describe.
 *
 *   const fx = new FixtureScope();
 *   before(async () => { if (!requireTool(fx, "qemu-system-x86_64", "qemu-system-x86")) return; … });
 *   after(() => fx.close());
 *   it("…", (t) => { if (!fx.ready(t)) return; … });
 */
export class FixtureScope implements Scope {
  #cleanups: (() => unknown)[] = [];
  /** Why the fixture was not built (the first skip), or null. */
  skipped: string | null = null;

  after(fn: () => unknown): void {
    this.#cleanups.push(fn);
  }

  skip(reason: string): void {
    this.skipped ??= reason;
  }

  /** False, after skipping `t` with the fixture's reason, when the fixture was not built. */
  ready(t: Skipper): boolean {
    if (this.skipped === null) return true;
    t.skip(this.skipped);
    return false;
  }

  /** Runs the cleanups, newest first; all of them run, and the first error is thrown after. */
  async close(): Promise<void> {
    let first: Error | null = null;
    for (const fn of this.#cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        first ??=
          err instanceof Error ? err : new Error(`a fixture cleanup failed: ${String(err)}`);
      }
    }
    if (first) throw first;
  }
}

export function tempDir(t: Cleanup, prefix = "inetboot-test-"): string {
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
 * Makes sure a command from a Debian package is available. Returns false (after requireOrSkip
 * with the reason) when it cannot be had; under CI=true that is a failure instead.
 */
export function requireTool(t: Skipper, cmd: string, pkg: string): boolean {
  return requireThing(t, () => have(cmd) || have(`/usr/sbin/${cmd}`), cmd, pkg);
}

/** Like requireTool, for a file a Debian package installs (firmware, ROMs). */
export function requireFile(t: Skipper, path: string, pkg: string): boolean {
  return requireThing(t, () => existsSync(path), path, pkg);
}

/** Installs Debian package `pkg` when root and apt-get are here (errors are the caller's to report). */
export function aptInstall(pkg: string): void {
  if (process.getuid?.() !== 0 || !have("apt-get")) return;
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
    // reported by the caller when what it needed is still missing
  }
}

function requireThing(t: Skipper, found: () => boolean, cmd: string, pkg: string): boolean {
  if (found()) return true;
  aptInstall(pkg);
  if (found()) return true;
  return requireOrSkip(
    t,
    `${cmd} (Debian package ${pkg}) is not installed and could not be installed (need root and apt)`,
  );
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
