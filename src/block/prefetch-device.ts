// Prefetcher: given an ordered boot profile, reads ahead through `next` (which fills the chunk
// cache) over N parallel streams, merging neighbouring regions into larger reads. Demand reads
// always go first: prefetch streams wait while any demand read is in progress. The number of
// streams adapts: it grows while throughput grows and shrinks when it stops paying.
import { readIntoFrom } from "./block-device.ts";
import type { BlockDevice } from "./block-device.ts";
import { PassThroughDevice } from "./pass-through.ts";
import type { ProfileEntry } from "../store/profile.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";

export const DEFAULT_PREFETCH_STREAMS = 4;
/** Neighbouring profile regions closer than this are read as one. */
export const PREFETCH_MERGE_GAP = 256 * 1024;
/** Largest single prefetch read. */
export const PREFETCH_MAX_READ = 4 * 1024 * 1024;

/** Merges profile regions in access order into at most PREFETCH_MAX_READ-sized reads. */
export function planPrefetch(
  profile: readonly ProfileEntry[],
  size: number,
): { offset: number; length: number }[] {
  const out: { offset: number; length: number }[] = [];
  for (const e of profile) {
    const offset = Math.min(e.offset, size);
    const end = Math.min(e.offset + e.length, size);
    if (end <= offset) continue;
    const last = out[out.length - 1];
    if (
      last &&
      offset >= last.offset &&
      offset <= last.offset + last.length + PREFETCH_MERGE_GAP &&
      end - last.offset <= PREFETCH_MAX_READ
    ) {
      last.length = Math.max(last.length, end - last.offset);
    } else out.push({ offset, length: end - offset });
  }
  return out;
}

export interface PrefetchStats {
  planned: number;
  done: number;
  bytes: number;
  failed: number;
  streams: number;
  finished: boolean;
}

export class PrefetchDevice extends PassThroughDevice {
  readonly #plan: { offset: number; length: number }[];
  readonly #log: Logger;
  readonly stats: PrefetchStats;
  #cursor = 0;
  #demand = 0;
  #demandWaiters: (() => void)[] = [];
  #closed = false;
  #maxStreams: number;
  readonly done: Promise<void>;

  constructor(
    next: BlockDevice,
    profile: readonly ProfileEntry[],
    options: { streams?: number; logger?: Logger } = {},
  ) {
    super(next);
    this.#plan = planPrefetch(profile, next.size);
    this.#log = options.logger ?? silentLogger;
    this.#maxStreams = options.streams ?? DEFAULT_PREFETCH_STREAMS;
    this.stats = {
      planned: this.#plan.length,
      done: 0,
      bytes: 0,
      failed: 0,
      streams: this.#maxStreams,
      finished: false,
    };
    this.done = this.#run();
  }

  async #run(): Promise<void> {
    const started = performance.now();
    // Adaptive concurrency: every second, compare throughput with the previous second; one
    // more stream while it grows (up to 4x the start), one fewer when it falls.
    let active = 0;
    let lastBytes = 0;
    let lastRate = 0;
    const ceiling = this.#maxStreams * 4;
    const tuner = setInterval(() => {
      const rate = this.stats.bytes - lastBytes;
      lastBytes = this.stats.bytes;
      if (rate > lastRate * 1.1 && this.stats.streams < ceiling) this.stats.streams++;
      else if (rate < lastRate * 0.9 && this.stats.streams > 1) this.stats.streams--;
      lastRate = rate;
    }, 1000);
    tuner.unref();
    await new Promise<void>((resolve) => {
      const pump = (): void => {
        while (!this.#closed && active < this.stats.streams && this.#cursor < this.#plan.length) {
          const job = this.#plan[this.#cursor++];
          active++;
          void this.#prefetch(job).finally(() => {
            active--;
            pump();
          });
        }
        if (active === 0 && (this.#closed || this.#cursor >= this.#plan.length)) resolve();
      };
      pump();
    });
    clearInterval(tuner);
    this.stats.finished = true;
    this.#log.info(
      { ...this.stats, seconds: (performance.now() - started) / 1000 },
      "prefetch finished",
    );
  }

  async #prefetch(job: { offset: number; length: number }): Promise<void> {
    while (this.#demand > 0 && !this.#closed)
      await new Promise<void>((r) => this.#demandWaiters.push(r));
    if (this.#closed) return;
    try {
      await this.next.read(job.offset, job.length);
      this.stats.done++;
      this.stats.bytes += job.length;
    } catch (err) {
      this.stats.failed++;
      this.#log.warn(
        { offset: job.offset, length: job.length, err: (err as Error).message },
        "prefetch read failed",
      );
    }
  }

  override read(offset: number, length: number): Promise<Buffer> {
    return this.#onDemand(() => this.next.read(offset, length));
  }

  readInto(offset: number, into: Buffer): Promise<void> {
    return this.#onDemand(() => readIntoFrom(this.next, offset, into));
  }

  /** A read answered at once keeps nobody waiting: the prefetch need not yield to it. */
  readIntoNow(offset: number, into: Buffer): boolean {
    return this.next.readIntoNow?.(offset, into) ?? false;
  }

  /** A machine's read: the prefetch yields while any is under way. */
  async #onDemand<T>(read: () => Promise<T>): Promise<T> {
    this.#demand++;
    try {
      return await read();
    } finally {
      this.#demand--;
      if (this.#demand === 0) for (const w of this.#demandWaiters.splice(0)) w();
    }
  }

  override async close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#demandWaiters.splice(0)) w();
    await this.done;
    await this.next.close();
  }
}
