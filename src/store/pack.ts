// `inetboot pack`: stream an image through the casync chunker, store new chunks (in worker
// threads), then publish the index and a (signed) release. Every file appears under its final
// name only when complete, so a killed pack leaves a valid store and a re-run reuses its chunks.
import { open } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { getAsset, isSea } from "node:sea";
import { Worker } from "node:worker_threads";
import { startModuleWorker } from "../lib/module-worker.ts";
import { CAIBX_DEFAULT_FLAGS, encodeBlobIndex } from "./caibx.ts";
import type { IndexChunk } from "./caibx.ts";
import { sha256Hex } from "./chunks.ts";
import { createChunker, DEFAULT_CHUNKER } from "./chunker.ts";
import type { ChunkerParams } from "./chunker.ts";
import { scanCatalog, writeCatalog } from "./catalog.ts";
import { UsageError } from "./errors.ts";
import { CHUNKS_DIR, indexPath, isImageName, latestPath, releasePath } from "./layout.ts";
import { MAX_RELEASE_FILE_BYTES } from "./limits.ts";
import { LocalStore } from "./local-store.ts";
import { formatKeyId, signMessage } from "./minisign.ts";
import type { SecretKey } from "./minisign.ts";
import { batchPacker } from "./pack-batch.ts";
import { KIND_NEW, KIND_ZERO } from "./pack-protocol.ts";
import type { PackBatch, PackBatchResult, PackWorkerInit } from "./pack-protocol.ts";
import { encodeRelease, RELEASE_FORMAT } from "./release.ts";
import type { Release } from "./release.ts";
import { openStore } from "./open-store.ts";
import { requireWritable } from "./store.ts";

export const DEFAULT_ZSTD_LEVEL = 3;
/** Bytes read per batch handed to a worker. */
export const PACK_READ_SIZE = 1024 * 1024;

export interface PackProgress {
  bytesRead: number;
  /** Total input size when known (regular files), else null. */
  totalBytes: number | null;
  chunks: number;
  newChunks: number;
  reusedChunks: number;
  zeroChunks: number;
  storedBytes: number;
}

export interface PackOptions {
  store: string;
  name: string;
  key?: SecretKey;
  chunker?: ChunkerParams;
  level?: number;
  /** Threads packing batches, the main thread included (default: one per core). */
  workers?: number;
  onProgress?: (progress: PackProgress) => void;
}

export interface PackSummary extends PackProgress {
  name: string;
  revision: number;
  size: number;
  uniqueChunks: number;
  indexDigest: string;
  releaseDigest: string;
  releasePath: string;
  signed: boolean;
  seconds: number;
  /** Image bytes per byte newly stored (dedup and compression together). */
  dedupRatio: number;
}

/**
 * A pack worker: the sibling module as this file was loaded (pack-worker.ts from a checkout,
 * pack-worker.js from the npm package's build), or in the single executable, the bundled worker
 * it carries as an asset (a SEA has no module files beside it).
 */
function startWorker(init: PackWorkerInit): Worker {
  // A worker's garbage is a few small objects per chunk: a 2 MB young generation does (the
  // default grows to 8 MB and more of resident memory, for no speed).
  const options = { workerData: init, resourceLimits: { maxYoungGenerationSizeMb: 2 } };
  if (isSea()) return new Worker(getAsset("pack-worker.js", "utf8"), { eval: true, ...options });
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return startModuleWorker(new URL(`./pack-worker${ext}`, import.meta.url), options);
}

interface Slot {
  worker: Worker | null;
  busy: number;
}

/** `count` packers of batches: the main thread itself, and count - 1 worker threads. */
class WorkerPool {
  readonly #slots: Slot[] = [];
  readonly #inline: ReturnType<typeof batchPacker>;
  #closed = false;
  readonly #waiting = new Map<
    number,
    { resolve: (r: PackBatchResult) => void; reject: (e: Error) => void }
  >();

  constructor(count: number, init: PackWorkerInit) {
    for (let i = 1; i < count; i++) {
      const worker = startWorker(init);
      const slot = { worker, busy: 0 };
      worker.on("message", (r: PackBatchResult) => {
        slot.busy--;
        this.#waiting.get(r.seq)?.resolve(r);
        this.#waiting.delete(r.seq);
      });
      worker.on("error", (err: Error) => this.#failAll(err));
      this.#slots.push(slot);
    }
    // Last: the main thread's own slot.
    this.#inline = batchPacker(init);
    this.#slots.push({ worker: null, busy: 0 });
  }

  #failAll(err: Error): void {
    for (const w of this.#waiting.values()) w.reject(err);
    this.#waiting.clear();
  }

  run(batch: PackBatch): Promise<PackBatchResult> {
    // The main thread also reads and cuts every batch: it packs one only while every worker
    // thread has two batches queued behind the one it is packing. Sharing them evenly left the
    // worker threads idle a third of the time while the main thread packed and cutting waited
    // (a dense 204 MB tar: 1.34 s before, 1.13 s with this rule; a queue of one, 1.25 s).
    const threads = this.#slots.filter((s) => s.worker);
    const idlest = threads.reduce<Slot | null>((a, b) => (a && a.busy <= b.busy ? a : b), null);
    const inline = this.#slots[this.#slots.length - 1];
    const slot = idlest && (idlest.busy < 3 || inline.busy > 0) ? idlest : inline;
    slot.busy++;
    const done = new Promise<PackBatchResult>((resolve, reject) =>
      this.#waiting.set(batch.seq, { resolve, reject }),
    );
    const worker = slot.worker;
    if (worker) worker.postMessage(batch, [batch.buffer]);
    else {
      setImmediate(() => {
        // A pack that failed has closed the pool (its compressor is gone): like a terminated
        // worker's, the batch is left unanswered.
        if (this.#closed) return;
        const waiter = this.#waiting.get(batch.seq);
        this.#waiting.delete(batch.seq);
        try {
          waiter?.resolve(this.#inline.pack(batch));
        } catch (err) {
          waiter?.reject(err as Error);
        } finally {
          slot.busy--;
        }
      });
    }
    return done;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#slots.flatMap((w) => (w.worker ? [w.worker.terminate()] : [])));
    this.#inline.close();
  }
}

export async function packImage(image: string, options: PackOptions): Promise<PackSummary> {
  const started = performance.now();
  if (!isImageName(options.name)) {
    throw new UsageError(
      `Image name "${options.name}" is not valid: use letters, digits, ".", "_", "+" and "-"`,
    );
  }
  const params = options.chunker ?? DEFAULT_CHUNKER;
  const chunker = createChunker(params);
  const level = options.level ?? DEFAULT_ZSTD_LEVEL;
  if (!Number.isInteger(level) || level < 1 || level > 19) {
    throw new UsageError(`zstd level ${level} is out of range: expected 1 to 19`);
  }
  const store = requireWritable(openStore(options.store), "pack into");
  // The worker threads write chunks straight into a local folder (see pack-worker.ts).
  if (!(store instanceof LocalStore)) {
    throw new UsageError(`Cannot pack into ${store.location}: expected a local store directory`);
  }
  const fh = await open(image, "r").catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`Cannot read image ${image}: ${err.message}`);
  });
  const st = await fh.stat();
  const progress: PackProgress = {
    bytesRead: 0,
    totalBytes: st.isFile() ? st.size : null,
    chunks: 0,
    newChunks: 0,
    reusedChunks: 0,
    zeroChunks: 0,
    storedBytes: 0,
  };
  const pool = new WorkerPool(options.workers ?? Math.max(1, availableParallelism()), {
    chunksDir: join(store.location, CHUNKS_DIR),
    level,
    maxChunk: params.max,
  });
  const chunks: IndexChunk[] = [];
  const seen = new Set<string>();
  /** Chunks this pack stored (the rest were there already). */
  const stored = new Set<string>();
  const pending = new Map<number, PackBatchResult>();
  const batchSizes = new Map<number, { offset: number; cuts: number[]; start: number }>();
  let nextToFlush = 0;
  const inFlight = new Set<Promise<void>>();
  // Room for each worker thread's three (one packing, two queued) and the main thread's own.
  const maxInFlight = 3 * (options.workers ?? availableParallelism());

  const flush = (): void => {
    for (let r = pending.get(nextToFlush); r; r = pending.get(nextToFlush)) {
      const meta = batchSizes.get(r.seq)!;
      let offset = meta.offset;
      let s = meta.start;
      for (let i = 0; i < r.ids.length; i++) {
        const size = meta.cuts[i] - s;
        s = meta.cuts[i];
        const id = r.ids[i];
        chunks.push({ offset, size, id });
        offset += size;
        progress.chunks++;
        seen.add(id);
        // A chunk that repeats within the image may be stored by a later batch's packer
        // before an earlier one gets to it (which then finds it there), or by both: it is new
        // once, wherever its storing occurrence falls.
        if (r.kinds[i] === KIND_ZERO) progress.zeroChunks++;
        else if (r.kinds[i] === KIND_NEW && !stored.has(id)) {
          stored.add(id);
          progress.newChunks++;
          progress.storedBytes += r.stored[i];
        } else progress.reusedChunks++;
      }
      pending.delete(nextToFlush);
      batchSizes.delete(nextToFlush);
      nextToFlush++;
    }
    options.onProgress?.({ ...progress });
  };

  try {
    let seq = 0;
    let imageOffset = 0;
    // The uncut tail of a batch starts the next one (the batch's buffer leaves with it).
    const carry = Buffer.allocUnsafe(params.max);
    let carried = 0;
    // Read buffers come back from the workers and are reused: memory stays flat.
    const spare: ArrayBuffer[] = [];
    let eof = false;
    while (!eof || carried > 0) {
      const buf = Buffer.from(spare.pop() ?? new ArrayBuffer(PACK_READ_SIZE + params.max));
      carry.copy(buf, 0, 0, carried);
      let end = carried;
      while (!eof && end < buf.length) {
        const { bytesRead } = await fh.read(buf, end, buf.length - end, null);
        if (bytesRead === 0) eof = true;
        end += bytesRead;
        progress.bytesRead += bytesRead;
      }
      const cuts: number[] = [];
      let s = 0;
      while (s < end && (eof || end - s >= params.max)) {
        s = chunker.findCut(buf, s, end);
        cuts.push(s);
      }
      carried = buf.copy(carry, 0, s, end);
      if (cuts.length === 0) continue;
      const batch: PackBatch = {
        seq: seq++,
        buffer: buf.buffer,
        start: buf.byteOffset,
        cuts: cuts.map((c) => c + buf.byteOffset),
      };
      batchSizes.set(batch.seq, { offset: imageOffset, cuts: batch.cuts, start: batch.start });
      imageOffset += s;
      const job = pool.run(batch).then((r) => {
        spare.push(r.buffer);
        pending.set(r.seq, r);
        flush();
      });
      const tracked: Promise<void> = job.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= maxInFlight) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } finally {
    await fh.close();
    await pool.close();
  }

  const size =
    chunks.length > 0 ? chunks[chunks.length - 1].offset + chunks[chunks.length - 1].size : 0;
  const indexBytes = encodeBlobIndex({ flags: CAIBX_DEFAULT_FLAGS, chunker: params, chunks });
  const indexDigest = sha256Hex(indexBytes);
  await store.create(indexPath(indexDigest), indexBytes); // false: the same index is there
  const published = await publishRelease(options, {
    size,
    indexDigest,
    chunks: chunks.length,
    chunker: params,
  });
  const seconds = (performance.now() - started) / 1000;
  return {
    ...progress,
    name: options.name,
    revision: published.release.revision,
    size,
    uniqueChunks: seen.size,
    indexDigest,
    releaseDigest: published.digest,
    releasePath: published.path,
    signed: options.key !== undefined,
    seconds,
    dedupRatio: progress.storedBytes > 0 ? size / progress.storedBytes : Infinity,
  };
}

/**
 * Claims the next revision of the image (exclusive create, so concurrent packs cannot take the
 * same one), signs it, then moves the `latest` pointer and rewrites the catalog.
 */
export async function publishRelease(
  options: Pick<PackOptions, "store" | "name" | "key">,
  content: Pick<Release, "size" | "chunks" | "chunker"> &
    Partial<Pick<Release, "profile" | "pack">> & { indexDigest: string },
): Promise<{ release: Release; digest: string; path: string }> {
  const { name, key } = options;
  const store = requireWritable(openStore(options.store), "publish a release in");
  const small = { maxBytes: MAX_RELEASE_FILE_BYTES, what: "release" };
  for (;;) {
    const revisions = (await scanCatalog(store)).images[name] ?? [];
    const parentRevision = revisions.at(-1);
    const parent =
      parentRevision === undefined
        ? null
        : {
            revision: parentRevision,
            digest: sha256Hex(await store.read(releasePath(name, parentRevision), small)),
          };
    const release: Release = {
      format: RELEASE_FORMAT,
      name,
      revision: (parentRevision ?? 0) + 1,
      created: new Date().toISOString(),
      size: content.size,
      index: content.indexDigest,
      chunks: content.chunks,
      chunker: { min: content.chunker.min, avg: content.chunker.avg, max: content.chunker.max },
      compression: "zstd",
      parent,
      profile: content.profile ?? null,
      pack: content.pack ?? null,
      keyId: key ? formatKeyId(key.keyId) : null,
    };
    const bytes = encodeRelease(release);
    const file = releasePath(name, release.revision);
    // Another pack took this revision: take the next.
    if (!(await store.create(file, bytes))) continue;
    if (key) {
      const trustedComment = `timestamp:${Math.floor(Date.now() / 1000)}\tfile:${release.revision}.json\timage:${name}\trevision:${release.revision}`;
      await store.replace(`${file}.minisig`, signMessage(key, bytes, { trustedComment }));
    }
    await store.replace(latestPath(name), `${release.revision}\n`);
    await writeCatalog(store);
    // A local release is named as the caller named its store (a relative path stays relative).
    const path = store instanceof LocalStore ? join(options.store, file) : store.describe(file);
    return { release, digest: sha256Hex(bytes), path };
  }
}
