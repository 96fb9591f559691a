// Worker thread for `pack`: packs the batches the main thread cuts (see pack-batch.ts). This is
// where the CPU time goes, so there is one per core beside the main thread.
import { parentPort, workerData } from "node:worker_threads";
import { batchPacker } from "./pack-batch.ts";
import type { PackBatch, PackWorkerInit } from "./pack-protocol.ts";

const { pack } = batchPacker(workerData as PackWorkerInit);

parentPort!.on("message", (batch: PackBatch) => {
  parentPort!.postMessage(pack(batch), [batch.buffer]);
});
