// ISOs for tests, made by xorriso from a map of path → content.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { requireTool, runOk } from "./helpers.ts";
import type { Skipper } from "./helpers.ts";

/** Makes an ISO of `files` (path → content) with xorriso; returns its path. */
export async function makeIso(
  t: Skipper,
  dir: string,
  files: Record<string, Buffer | string>,
  flags: string[] = ["-R", "-J"],
  name = "out.iso",
): Promise<string | null> {
  if (!requireTool(t, "xorriso", "xorriso")) return null;
  const tree = join(dir, `${name}.tree`);
  for (const [path, data] of Object.entries(files)) {
    mkdirSync(dirname(join(tree, path)), { recursive: true });
    writeFileSync(join(tree, path), data);
  }
  const iso = join(dir, name);
  await runOk("xorriso", [
    "-as",
    "mkisofs",
    "-quiet",
    ...flags,
    "-V",
    "TEST_LIVE",
    "-o",
    iso,
    tree,
  ]);
  return iso;
}
