import { readFileSync, statSync } from "node:fs";
import { dirname, relative, resolve, sep } from "node:path";
import js from "@eslint/js";
import tseslint from "typescript-eslint";

// ---- Import direction -------------------------------------------------------------------------
// src/ is a house of floors; arrows only point down. A folder may import its own files and any
// folder on a lower floor, never one on its own floor (siblings stay independent) or above.
// Lowest first. `net` (network-interface lookups, no imports of ours) sits on the floor with `lib`.
export const FLOORS = [
  ["lib", "net"],
  ["store"],
  ["block"],
  ["nbd", "dhcp", "tftp", "http"],
  ["iso", "boot", "disk"],
  ["serve"],
  ["cli"],
];

const SRC = resolve(import.meta.dirname, "src");
const floorOf = new Map(FLOORS.flatMap((folders, floor) => folders.map((f) => [f, floor])));
const FLOOR_TEXT = FLOORS.map((f) => f.join("+")).join(" → ");

/** The src folder of an absolute path ("store" for src/store/x.ts), or null outside src/ folders. */
function folderOf(file) {
  const rel = relative(SRC, file);
  if (rel.startsWith("..") || !rel.includes(sep)) return null;
  return rel.split(sep)[0];
}

const show = (file) =>
  relative(import.meta.dirname, file)
    .split(sep)
    .join("/");

/** Why `from` (a folder) may not import `to`, or null when it may. */
export function floorProblem(from, to) {
  if (from === to) return null;
  if (!floorOf.has(from)) return `src/${from} is on no floor: add it to FLOORS in eslint.config.js`;
  if (!floorOf.has(to)) return `src/${to} is on no floor: add it to FLOORS in eslint.config.js`;
  if (floorOf.get(to) < floorOf.get(from)) return null;
  const where = floorOf.get(to) === floorOf.get(from) ? "its own floor" : "a higher floor";
  return `${from} may not depend on ${to} (${to} is on ${where}; floors, lowest first: ${FLOOR_TEXT})`;
}

const IMPORT_RE =
  /(?:^|[\s;})])(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)/g;
const importCache = new Map();

/** The src files a src file imports (relative specifiers only), read from its text. */
function importsOf(file) {
  let mtime;
  try {
    mtime = statSync(file).mtimeMs;
  } catch {
    return [];
  }
  const hit = importCache.get(file);
  if (hit && hit.mtime === mtime) return hit.targets;
  const text = readFileSync(file, "utf8");
  const targets = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2];
    if (!spec.startsWith(".")) continue;
    const target = resolve(dirname(file), spec);
    if (folderOf(target) !== null) targets.push(target);
  }
  importCache.set(file, { mtime, targets });
  return targets;
}

/** A path of imports from `start` back to `file`, or null when there is none. */
function circleThrough(file, start) {
  const seen = new Set();
  const stack = [[start, [file, start]]];
  while (stack.length > 0) {
    const [at, path] = stack.pop();
    if (at === file) return path;
    if (seen.has(at)) continue;
    seen.add(at);
    for (const next of importsOf(at)) stack.push([next, [...path.slice(0, -1), at, next]]);
  }
  return null;
}

/** Calls `check(node, specifier)` for every static import, re-export and literal import(). */
function eachImport(check) {
  const source = (node) => {
    if (node.source && typeof node.source.value === "string") check(node.source, node.source.value);
  };
  return {
    ImportDeclaration: source,
    ExportNamedDeclaration: source,
    ExportAllDeclaration: source,
    ImportExpression: source,
  };
}

export const architecture = {
  rules: {
    floors: {
      meta: {
        type: "problem",
        docs: { description: "Imports between src/ folders only point down the floors" },
        schema: [],
      },
      create(context) {
        const file = context.filename;
        const from = folderOf(file);
        if (from === null) return {};
        return eachImport((node, spec) => {
          if (!spec.startsWith(".")) return;
          const target = resolve(dirname(file), spec);
          const to = folderOf(target);
          if (to === null) return;
          const problem = floorProblem(from, to);
          if (problem)
            context.report({ node, message: `${show(file)} imports ${show(target)}: ${problem}` });
        });
      },
    },
    "no-import-circle": {
      meta: {
        type: "problem",
        docs: { description: "No src/ file imports itself through other files" },
        schema: [],
      },
      create(context) {
        const file = context.filename;
        if (folderOf(file) === null) return {};
        return eachImport((node, spec) => {
          if (!spec.startsWith(".")) return;
          const target = resolve(dirname(file), spec);
          if (folderOf(target) === null) return;
          const circle = circleThrough(file, target);
          if (circle) {
            context.report({
              node,
              message: `${show(file)} is in an import circle: ${circle.map(show).join(" → ")}`,
            });
          }
        });
      },
    },
  },
};

export default tseslint.config(
  { ignores: ["node_modules/", "bench/out/", "test/artifacts/", "coverage/", "dist/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ["bin/*.js", "eslint.config.js"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["describe", "it", "test", "suite"] },
          ],
        },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "no-console": "error",
    },
  },
  // The config itself is plain JavaScript: no types to check its rule code against.
  { files: ["eslint.config.js"], ...tseslint.configs.disableTypeChecked },
  {
    files: ["src/**/*.ts"],
    plugins: { architecture },
    rules: { "architecture/floors": "error", "architecture/no-import-circle": "error" },
  },
  {
    files: ["src/cli/**", "bench/**", "bin/**", "scripts/**"],
    rules: { "no-console": "off" },
  },
);
