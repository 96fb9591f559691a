// The installable artifacts (npm tarball, single executable), built once per source state and
// kept in /var/tmp: the key hashes everything that goes into them, so an edit rebuilds and two
// test files asking at once each build into their own folder and the first rename wins.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { join, relative } from "node:path";
import { REPO, requireOrSkip } from "./helpers.ts";
import type { Skipper } from "./helpers.ts";

const CACHE = "/var/tmp/inetboot-test-artifacts";
const INPUTS = [
  "bin",
  "scripts",
  "src",
  "package.json",
  "package-lock.json",
  "tsconfig.json",
  "tsconfig.build.json",
];

function filesUnder(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

function sourceKey(): string {
  const h = createHash("sha256");
  for (const input of INPUTS) {
    for (const file of filesUnder(join(REPO, input))) {
      h.update(`${relative(REPO, file)}\0`)
        .update(readFileSync(file))
        .update("\0");
    }
  }
  return h.digest("hex").slice(0, 16);
}

/**
 * Runs scripts/build-KIND.ts (with `args`) into a fresh folder named LABEL-KEY unless this source
 * state has it already; other LABEL-KEY folders go.
 */
function built(
  kind: "npm" | "sea",
  file: (dir: string) => string | undefined,
  label: string = kind,
  args: string[] = [],
): string {
  const dir = join(CACHE, `${label}-${sourceKey()}`);
  const existing = existsSync(dir) ? file(dir) : undefined;
  if (existing) return existing;
  mkdirSync(CACHE, { recursive: true });
  // Older builds of this artifact go, unless another test process (or checkout) may be using
  // one: a build in progress names its pid, and a finished one is kept for an hour.
  const hourAgo = Date.now() - 3600_000;
  for (const old of readdirSync(CACHE)) {
    const m = /^(.+)-[0-9a-f]{16}(?:\.(\d+))?$/.exec(old);
    if (m?.[1] !== label) continue;
    const pid = m[2] === undefined ? 0 : Number(m[2]);
    if (pid > 0 && pid !== process.pid && existsSync(`/proc/${pid}`)) continue;
    if (pid === 0 && statSync(join(CACHE, old)).mtimeMs > hourAgo) continue;
    rmSync(join(CACHE, old), { recursive: true, force: true });
  }
  const work = `${dir}.${process.pid}`;
  execFileSync(
    process.execPath,
    [join(REPO, "scripts", `build-${kind}.ts`), ...args, "--out", work],
    { cwd: REPO, stdio: ["ignore", "ignore", "pipe"] },
  );
  try {
    renameSync(work, dir);
  } catch {
    rmSync(work, { recursive: true, force: true }); // another test file built it first
  }
  const out = file(dir);
  if (!out) throw new Error(`scripts/build-${kind}.ts made nothing in ${dir}`);
  return out;
}

/** The npm package (dist/inetboot-VERSION.tgz of `npm run build:npm`). */
export function npmTarball(): string {
  return built("npm", (dir) => {
    const tgz = readdirSync(dir).find((f) => f.endsWith(".tgz"));
    return tgz && join(dir, tgz);
  });
}

/** The single executable for this machine (`npm run build:sea`), or null (skipped) elsewhere. */
export function seaBinary(t: Skipper): Promise<string | null> {
  if (process.platform !== "linux" || !["x64", "arm64"].includes(process.arch)) {
    requireOrSkip(t, "the single executable is built for linux-x64 and linux-arm64");
    return Promise.resolve(null);
  }
  const name = `inetboot-linux-${process.arch}`;
  return Promise.resolve(
    built("sea", (dir) => (existsSync(join(dir, name)) ? join(dir, name) : undefined)),
  );
}

/**
 * The single executable for linux-`arch` built on this machine (`npm run build:sea -- --arch
 * ARCH`): for another architecture, the same Node version's binary for it with sockopt
 * cross-compiled (scripts/sea-target.ts); its blob has no code cache. Beside it, in sea/, what
 * went in (sockopt.node when it was built).
 */
export function seaBinaryFor(t: Skipper, arch: "x64" | "arm64"): Promise<string | null> {
  if (arch === process.arch) return seaBinary(t);
  if (process.platform !== "linux") {
    requireOrSkip(t, "the single executable is built on Linux");
    return Promise.resolve(null);
  }
  const name = `inetboot-linux-${arch}`;
  return Promise.resolve(
    built(
      "sea",
      (dir) => (existsSync(join(dir, name)) ? join(dir, name) : undefined),
      `sea-${arch}`,
      ["--arch", arch],
    ),
  );
}
