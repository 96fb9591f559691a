// `npm run build:npm`: the npm package. Node refuses to strip types under node_modules, so the
// package carries the sources compiled to plain JavaScript (tsc, with relative imports rewritten
// from .ts to .js) beside bin/inetboot.js, under a manifest of its own: the checkout's
// package.json has no `engines` (its pinned Node 24 runs it; npm would warn on every npx).
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
/** Where the artifact goes: `--out DIR` (default dist/). */
const DIST = process.argv.includes("--out")
  ? resolve(process.argv[process.argv.indexOf("--out") + 1])
  : join(ROOT, "dist");
const STAGE = join(DIST, "npm");

const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as Record<
  string,
  unknown
>;

rmSync(STAGE, { recursive: true, force: true });
mkdirSync(STAGE, { recursive: true });
execFileSync(
  process.execPath,
  [
    join(ROOT, "node_modules/typescript/bin/tsc"),
    "-p",
    "tsconfig.build.json",
    "--outDir",
    join(STAGE, "dist"),
  ],
  {
    cwd: ROOT,
    stdio: "inherit",
  },
);
cpSync(join(ROOT, "bin"), join(STAGE, "bin"), { recursive: true });
cpSync(join(ROOT, "docs"), join(STAGE, "docs"), { recursive: true });
cpSync(join(ROOT, "README.md"), join(STAGE, "README.md"));
const published = {
  name: manifest.name,
  version: manifest.version,
  description: manifest.description,
  type: "module",
  license: manifest.license,
  engines: { node: ">=24" },
  bin: manifest.bin,
  files: ["bin", "dist", "docs", "README.md"],
  dependencies: manifest.dependencies,
  optionalDependencies: manifest.optionalDependencies,
};
writeFileSync(join(STAGE, "package.json"), `${JSON.stringify(published, null, 2)}\n`);
const out = execFileSync("npm", ["pack", "--pack-destination", DIST, STAGE], {
  cwd: ROOT,
  encoding: "utf8",
}).trim();
console.log(`npm package: ${join(DIST, out.split("\n").at(-1) ?? "")}`);
