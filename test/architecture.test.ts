// The import-direction rules of eslint.config.js: what they say, and that store/ and block/ keep
// them (the whole tree is checked by npm run lint).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { Linter } from "eslint";
import type { ESLint } from "eslint";
import tseslint from "typescript-eslint";

// (A JavaScript module without types: imported by a computed name, typed here.)
const configModule = "../eslint.config.js";
const { architecture, floorProblem } = (await import(configModule)) as {
  architecture: ESLint.Plugin;
  floorProblem: (from: string, to: string) => string | null;
};

const ROOT = resolve(import.meta.dirname, "..");
const config = [
  {
    files: ["**/*.ts"],
    languageOptions: { parser: tseslint.parser },
    plugins: { architecture },
    rules: { "architecture/floors": "error", "architecture/no-import-circle": "error" },
  },
] as Linter.Config[];

function lint(file: string, text = readFileSync(file, "utf8")): string[] {
  return new Linter().verify(text, config, file).map((m) => m.message);
}

describe("import floors", () => {
  it("lets a folder import lower floors and itself, nothing on its floor or above", () => {
    assert.equal(floorProblem("block", "store"), null);
    assert.equal(floorProblem("cli", "lib"), null);
    assert.equal(floorProblem("store", "net"), null);
    assert.equal(floorProblem("store", "store"), null);
    assert.match(
      String(floorProblem("store", "block")),
      /^store may not depend on block \(block is on a higher floor/,
    );
    assert.match(String(floorProblem("nbd", "dhcp")), /dhcp is on its own floor/);
    assert.match(String(floorProblem("lib", "net")), /net is on its own floor/);
    assert.match(String(floorProblem("store", "attic")), /src\/attic is on no floor/);
  });

  it("names both files and the rule broken", () => {
    const file = join(ROOT, "src/store/example.ts");
    const messages = lint(
      file,
      'import type { BlockDevice } from "../block/block-device.ts";\nexport { x } from "../serve/plan.ts";\nawait import("../cli/main.ts");\nimport "./layout.ts";\n',
    );
    assert.deepEqual(
      messages.map((m) => m.replace(/ \(.*$/, "")),
      [
        "src/store/example.ts imports src/block/block-device.ts: store may not depend on block",
        "src/store/example.ts imports src/serve/plan.ts: store may not depend on serve",
        "src/store/example.ts imports src/cli/main.ts: store may not depend on cli",
      ],
    );
  });

  it("finds an import circle through files on disk, and shows it", () => {
    // store.ts importing the store that implements it: local-store.ts imports store.ts back.
    const file = join(ROOT, "src/store/store.ts");
    assert.deepEqual(lint(file, 'import { LocalStore } from "./local-store.ts";\n'), [
      "src/store/store.ts is in an import circle: src/store/store.ts → src/store/local-store.ts → src/store/store.ts",
    ]);
  });

  it("store/ and block/ import only down and hold no import circle", () => {
    for (const folder of ["src/store", "src/block"]) {
      for (const name of readdirSync(join(ROOT, folder)).filter((f) => f.endsWith(".ts"))) {
        const file = join(ROOT, folder, name);
        assert.deepEqual(lint(file), [], `${folder}/${name}`);
      }
    }
  });
});
