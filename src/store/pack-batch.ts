// The work of `pack` on one batch of cut chunks: hash, recognise zero chunks, compress and store
// the new ones. Run by each worker thread (pack-worker.ts) and by the main thread itself, which
// takes batches too (one isolate fewer than cores: the memory of a whole V8 instance).
import { existsSync, mkdirSync, renameSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sha256Hex, zeroChunkId } from "./chunks.ts";
import { chunkFile } from "./layout.ts";
import { tempPathFor } from "../lib/atomic-file.ts";
import { FrameCompressor } from "./frame-compressor.ts";
import { KIND_NEW, KIND_REUSED, KIND_ZERO } from "./pack-protocol.ts";
import type { PackBatch, PackBatchResult, PackWorkerInit } from "./pack-protocol.ts";

/** A packer of batches with its own zstd context: `pack(batch)` runs synchronously. */
export function batchPacker(init: PackWorkerInit): {
  pack: (batch: PackBatch) => PackBatchResult;
  close: () => void;
} {
  const zeros = Buffer.alloc(init.maxChunk);
  const madeDirs = new Set<string>();
  // One zstd context for the packer's life; each frame is written from its buffer, uncopied.
  const compressor = new FrameCompressor(init.level, init.maxChunk);

  const storeChunk = (id: string, data: Uint8Array): number => {
    const dir = join(init.chunksDir, id.slice(0, 4));
    const path = join(init.chunksDir, chunkFile(id));
    if (existsSync(path)) {
      // Fresh mtime tells a concurrent `gc` this chunk is in use (its grace period).
      const now = new Date();
      utimesSync(path, now, now);
      return -1;
    }
    if (!madeDirs.has(dir)) {
      mkdirSync(dir, { recursive: true });
      madeDirs.add(dir);
    }
    const compressed = compressor.compress(data);
    const tmp = tempPathFor(path);
    writeFileSync(tmp, compressed, { flag: "wx" });
    renameSync(tmp, path);
    return compressed.length;
  };

  const pack = (batch: PackBatch): PackBatchResult => {
    const buf = Buffer.from(batch.buffer);
    const n = batch.cuts.length;
    const result: PackBatchResult = {
      seq: batch.seq,
      buffer: batch.buffer,
      ids: new Array<string>(n),
      kinds: new Uint8Array(n),
      stored: new Array<number>(n),
    };
    let s = batch.start;
    for (let i = 0; i < n; i++) {
      const e = batch.cuts[i];
      const data = buf.subarray(s, e);
      const zero = zeros.compare(data, 0, data.length, 0, data.length) === 0 && data.length > 0;
      const id = zero ? zeroChunkId(data.length) : sha256Hex(data);
      // Zero chunks are stored too (a few tiny files) so casync, which has no notion of them,
      // can extract our images; inetboot clients recognise them by id and never fetch them.
      const stored = storeChunk(id, data);
      result.ids[i] = id;
      result.kinds[i] = zero ? KIND_ZERO : stored < 0 ? KIND_REUSED : KIND_NEW;
      result.stored[i] = Math.max(stored, 0);
      s = e;
    }
    return result;
  };
  return { pack, close: () => compressor.close() };
}
