import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { it } from "node:test";
import type { Worker } from "node:worker_threads";
import { startModuleWorker } from "./module-worker.ts";

/** The worker's first message, or its error. */
function outcome(worker: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  }).finally(() => worker.terminate());
}

it("module worker: runs a TypeScript entry and what it imports, with its workerData", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "inetboot-worker-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "double.ts"), "export const double = (n: number): number => n * 2;\n");
  writeFileSync(
    join(dir, "entry.ts"),
    `import { parentPort, workerData } from "node:worker_threads";
import { double } from "./double.ts";
interface Input { n: number }
parentPort!.postMessage(double((workerData as Input).n));
`,
  );
  const entry = pathToFileURL(join(dir, "entry.ts"));
  // Twice: the second start finds the stripped modules in the compile cache.
  for (const n of [21, 4]) {
    assert.equal(await outcome(startModuleWorker(entry, { workerData: { n } })), n * 2);
  }
});

it("module worker: an entry that cannot load is the worker's error event", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "inetboot-worker-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "broken.ts"), 'import { nothing } from "./missing.ts";\nnothing();\n');
  await assert.rejects(
    outcome(startModuleWorker(pathToFileURL(join(dir, "broken.ts")))),
    /missing\.ts/,
  );
});
