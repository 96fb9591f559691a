// `npm run build:sea`: inetboot as one executable file for linux-x64 that needs nothing but the
// OS (a Node single-executable application). esbuild bundles the program and the pack worker
// into CommonJS; the blob carries the worker and sockopt's compiled binding as assets; postject
// injects it into a copy of the pinned Node 24 binary.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { build } from "esbuild";
import type { BuildOptions } from "esbuild";

const ROOT = new URL("..", import.meta.url).pathname;
/** Where the artifact goes: `--out DIR` (default dist/). */
const DIST = process.argv.includes("--out")
  ? resolve(process.argv[process.argv.indexOf("--out") + 1])
  : join(ROOT, "dist");
const WORK = join(DIST, "sea");
const OUT = join(DIST, `inetboot-linux-${process.arch}`);
const SOCKOPT = join(ROOT, "node_modules/sockopt/build/Release/sockopt.node");
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

const assets: Record<string, string> = { "pack-worker.js": join(WORK, "pack-worker.js") };
if (existsSync(SOCKOPT)) assets["sockopt.node"] = SOCKOPT;
else
  console.warn(
    "sockopt's binding is not built: the executable's servers cannot bind to one interface",
  );
const config = {
  main: join(WORK, "inetboot.cjs"),
  output: join(WORK, "sea-prep.blob"),
  disableExperimentalSEAWarning: true,
  useCodeCache: true,
  assets,
};
writeFileSync(join(WORK, "sea-config.json"), JSON.stringify(config, null, 2));
execFileSync(process.execPath, ["--experimental-sea-config", join(WORK, "sea-config.json")], {
  stdio: "inherit",
});

rmSync(OUT, { force: true });
copyFileSync(process.execPath, OUT);
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
console.log(`single executable: ${OUT} (${mib} MiB, Node ${process.version}, ${process.arch})`);
