// Worker threads on TypeScript modules, as run from a checkout. Node strips types per isolate, so
// every worker would load a TypeScript stripper of its own (25–45 MB each, measured with the
// pack workers). Node's compile cache keeps the stripped JavaScript of each module: a worker
// that turns it on before loading its entry finds the modules there (after the first run) and
// never loads the stripper. Plain .js entries (the npm build) start as they are.
import { Worker } from "node:worker_threads";
import type { WorkerOptions } from "node:worker_threads";

// Runs in the worker (a CommonJS script). A failure to load is thrown outside the promise, so
// the parent sees an "error" event, as for a worker started on the file itself.
const BOOT = `"use strict";
require("node:module").enableCompileCache();
const load = (entry) => import(entry).catch((err) => setImmediate(() => { throw err; }));
`;

/** A worker running the module at `entry`. */
export function startModuleWorker(entry: URL, options: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith(".ts")) return new Worker(entry, options);
  return new Worker(`${BOOT}load(${JSON.stringify(entry.href)});`, { ...options, eval: true });
}
