// `npm run build:sea [-- --arch x64|arm64] [--out DIR]`: inetboot as one executable file for
// linux-ARCH (default: this machine's) that needs nothing but the OS (a Node single-executable
// application). esbuild bundles the program and the pack worker into CommonJS; the blob carries
// the worker and sockopt's compiled binding as assets; postject injects it into a copy of the
// pinned Node 24 binary, or for another architecture into the same Node version's binary for it
// (scripts/sea-target.ts fetches that and cross-compiles sockopt).
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { build } from "esbuild";
import type { BuildOptions } from "esbuild";
import { crossSockopt, elfArch, isArch, nodePackage } from "./sea-target.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const { values: opts } = parseArgs({
  options: { arch: { type: "string", default: process.arch }, out: { type: "string" } },
});
const ARCH = opts.arch;
if (!isArch(ARCH)) throw new Error(`--arch ${ARCH}: the executable is built for x64 or arm64`);
/** Another architecture: no code cache (V8's is only valid for the V8 that made it). */
const CROSS = ARCH !== process.arch;
/** Where the artifact goes: `--out DIR` (default dist/). */
const DIST = opts.out ? resolve(opts.out) : join(ROOT, "dist");
const WORK = join(DIST, "sea");
const OUT = join(DIST, `inetboot-linux-${ARCH}`);
const FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

rmSync(WORK, { recursive: true, force: true });
mkdirSync(WORK, { recursive: true });
const common = {
  bundle: true,
  platform: "node" as const,
  format: "cjs" as const,
  target: "node24",
  logLevel: "warning" as const,
  // import.meta is only read where a SEA takes another path (isSea()): its CJS shim is empty.
  logOverride: { "empty-import-meta": "silent" as const },
  // Optional: loaded from the asset below in the executable, never bundled.
  external: ["sockopt"],
} satisfies BuildOptions;
await build({
  ...common,
  entryPoints: [join(ROOT, "src/cli/sea-main.ts")],
  outfile: join(WORK, "inetboot.cjs"),
});
await build({
  ...common,
  entryPoints: [join(ROOT, "src/store/pack-worker.ts")],
  outfile: join(WORK, "pack-worker.js"),
});

// The Node binary to inject into (the same version as this one: the blob's format is its) and
// sockopt's binding for ARCH.
let node = process.execPath;
let sockopt: string | undefined = join(ROOT, "node_modules/sockopt/build/Release/sockopt.node");
if (CROSS) {
  const pkg = nodePackage(ARCH, process.version);
  node = join(pkg, "bin/node");
  sockopt = crossSockopt(ARCH, pkg, join(WORK, "sockopt.node"));
} else if (!existsSync(sockopt)) {
  sockopt = undefined;
  console.warn(
    "sockopt's binding is not built: the executable's servers cannot bind to one interface",
  );
}
const assets: Record<string, string> = { "pack-worker.js": join(WORK, "pack-worker.js") };
if (sockopt) {
  assets["sockopt.node"] = sockopt;
  const elf = elfArch(sockopt);
  if (elf !== ARCH) throw new Error(`${sockopt} is built for ${elf}, not ${ARCH}`);
  console.log(`sockopt binding: ${sockopt} (ELF, ${elf})`);
}
const config = {
  main: join(WORK, "inetboot.cjs"),
  output: join(WORK, "sea-prep.blob"),
  disableExperimentalSEAWarning: true,
  // Node's docs: a cross-platform blob must have useCodeCache (and useSnapshot) false.
  useCodeCache: !CROSS,
  assets,
};
writeFileSync(join(WORK, "sea-config.json"), JSON.stringify(config, null, 2));
execFileSync(process.execPath, ["--experimental-sea-config", join(WORK, "sea-config.json")], {
  stdio: "inherit",
});

rmSync(OUT, { force: true });
copyFileSync(node, OUT);
execFileSync(
  process.execPath,
  [
    join(ROOT, "node_modules/postject/dist/cli.js"),
    OUT,
    "NODE_SEA_BLOB",
    config.output,
    "--sentinel-fuse",
    FUSE,
  ],
  { stdio: "pipe" }, // LIEF warns about notes in Node's binary; a failure still throws with its output
);
const mib = (statSync(OUT).size / 2 ** 20).toFixed(0);
console.log(`single executable: ${OUT} (${mib} MiB, Node ${process.version}, linux-${ARCH})`);
