// Several origins for one store. Chunks are asked of the fastest healthy mirror (measured
// latency); a slow answer triggers a hedged request to the next mirror; an error, a timeout or
// corrupt bytes fail over to the next at once. Only verified bytes are ever returned.
import { loadChunkWithFrame } from "../store/chunks.ts";
import type { ChunkSource, VerifiedChunk } from "../store/chunks.ts";
import type { StoreReader } from "../store/store.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { BlockIoError } from "./block-device.ts";
import type { ChunkFetcher, ChunkRef } from "./chunk-fetcher.ts";

export interface MirrorOptions {
  /** Give up on one mirror's answer after this long and fail over. */
  timeoutMs?: number;
  /** Hedge (ask the next mirror too) when an answer takes this many times the mirror's usual latency. */
  hedgeFactor?: number;
  /** Never hedge sooner than this. */
  minHedgeMs?: number;
  /** How long a failed mirror is tried only after the healthy ones. */
  penaltyMs?: number;
  /** Passes over all mirrors before a read fails. */
  rounds?: number;
  /** Called with each chunk fetch's duration (metrics): the mirror and whether it succeeded. */
  onFetch?: (seconds: number, mirror: string, ok: boolean) => void;
  logger?: Logger;
}

export const DEFAULT_MIRROR_OPTIONS: Required<Omit<MirrorOptions, "logger" | "onFetch">> =
  Object.freeze({
    timeoutMs: 15_000,
    hedgeFactor: 4,
    minHedgeMs: 200,
    penaltyMs: 30_000,
    rounds: 2,
  });

export interface MirrorStats {
  location: string;
  latencyMs: number | null;
  requests: number;
  failures: number;
  failovers: number;
  hedges: number;
  healthy: boolean;
  lastError: string | null;
}

interface Mirror {
  source: ChunkSource;
  ewmaMs: number | null;
  penalizedUntil: number;
  stats: MirrorStats;
}

export class MirrorSet implements ChunkFetcher {
  readonly #mirrors: Mirror[];
  readonly #opts: Required<Omit<MirrorOptions, "logger" | "onFetch">>;
  readonly #onFetch: MirrorOptions["onFetch"];
  readonly #log: Logger;
  fetched = 0;
  fetchedBytes = 0;

  constructor(sources: ChunkSource[], options: MirrorOptions = {}) {
    if (sources.length === 0) throw new Error("A mirror set needs at least one store");
    const { logger, onFetch, ...rest } = options;
    this.#onFetch = onFetch;
    this.#opts = {
      ...DEFAULT_MIRROR_OPTIONS,
      ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)),
    };
    this.#log = logger ?? silentLogger;
    this.#mirrors = sources.map((source) => ({
      source,
      ewmaMs: null,
      penalizedUntil: 0,
      stats: {
        location: source.reader.location,
        latencyMs: null,
        requests: 0,
        failures: 0,
        failovers: 0,
        hedges: 0,
        healthy: true,
        lastError: null,
      },
    }));
  }

  get stats(): MirrorStats[] {
    const now = Date.now();
    return this.#mirrors.map((m) => ({
      ...m.stats,
      latencyMs: m.ewmaMs,
      healthy: m.penalizedUntil <= now,
    }));
  }

  /** The mirrors' store readers, best first (healthy by latency, then penalised ones). */
  get readers(): StoreReader[] {
    return this.#order().map((m) => m.source.reader);
  }

  /** Measures each mirror's latency once (a HEAD of a small file) so the first pick is good. */
  async probe(path = "releases/index.json"): Promise<void> {
    await Promise.all(
      this.#mirrors.map(async (m) => {
        const t = performance.now();
        try {
          await m.source.reader.size(path);
          m.ewmaMs = performance.now() - t;
        } catch (err) {
          this.#fail(m, err);
        }
      }),
    );
  }

  /** Healthy mirrors by latency (unmeasured ones in given order), then penalised ones. */
  #order(): Mirror[] {
    const now = Date.now();
    const rank = (m: Mirror): number => (m.penalizedUntil > now ? 1e12 : 0) + (m.ewmaMs ?? 0);
    return this.#mirrors
      .map((m, i) => ({ m, i }))
      .sort((a, b) => rank(a.m) - rank(b.m) || a.i - b.i)
      .map((x) => x.m);
  }

  #fail(m: Mirror, err: unknown): void {
    m.stats.failures++;
    m.stats.lastError = (err as Error).message;
    m.penalizedUntil = Date.now() + this.#opts.penaltyMs;
    this.#log.warn(
      { mirror: m.source.reader.location, err: (err as Error).message },
      "mirror failed; failing over",
    );
  }

  #attempt(m: Mirror, chunk: ChunkRef): Promise<VerifiedChunk> {
    m.stats.requests++;
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within ${this.#opts.timeoutMs} ms`)),
        this.#opts.timeoutMs,
      );
    });
    return Promise.race([loadChunkWithFrame(m.source, chunk), timeout])
      .then(
        (data) => {
          const ms = performance.now() - started;
          m.ewmaMs = m.ewmaMs === null ? ms : 0.8 * m.ewmaMs + 0.2 * ms;
          this.#onFetch?.(ms / 1000, m.stats.location, true);
          return data;
        },
        (err: unknown) => {
          this.#onFetch?.((performance.now() - started) / 1000, m.stats.location, false);
          throw err;
        },
      )
      .finally(() => clearTimeout(timer));
  }

  async fetch(chunk: ChunkRef): Promise<Buffer> {
    return (await this.fetchWithFrame(chunk)).data;
  }

  async fetchWithFrame(chunk: ChunkRef): Promise<VerifiedChunk> {
    const errors: string[] = [];
    for (let round = 0; round < this.#opts.rounds; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, 200 * round));
      const data = await this.#race(this.#order(), chunk, errors);
      if (data) {
        this.fetched++;
        this.fetchedBytes += data.data.length;
        return data;
      }
    }
    throw new BlockIoError(
      `Chunk ${chunk.id} could not be read from any mirror: ${errors.join("; ")}`,
    );
  }

  /**
   * Asks mirrors in order: the next one starts when the current fails or is slower than its
   * hedge delay. Resolves with the first verified answer, or null when every mirror failed.
   */
  #race(order: Mirror[], chunk: ChunkRef, errors: string[]): Promise<VerifiedChunk | null> {
    return new Promise((resolve) => {
      let next = 0;
      let running = 0;
      let done = false;
      let hedgeTimer: NodeJS.Timeout | undefined;
      const launch = (hedged: boolean): void => {
        clearTimeout(hedgeTimer);
        if (done || next >= order.length) {
          if (!done && running === 0) {
            done = true;
            resolve(null);
          }
          return;
        }
        const m = order[next++];
        if (hedged) m.stats.hedges++;
        running++;
        const delay = Math.max(
          this.#opts.minHedgeMs,
          (m.ewmaMs ?? this.#opts.minHedgeMs) * this.#opts.hedgeFactor,
        );
        hedgeTimer = setTimeout(() => launch(true), delay);
        this.#attempt(m, chunk).then(
          (data) => {
            running--;
            if (done) return;
            done = true;
            clearTimeout(hedgeTimer);
            resolve(data);
          },
          (err: unknown) => {
            running--;
            this.#fail(m, err);
            errors.push(`${m.source.reader.location}: ${(err as Error).message}`);
            if (done) return;
            if (next < order.length) m.stats.failovers++;
            launch(false);
          },
        );
      };
      launch(false);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.#mirrors.map((m) => m.source.reader.close()));
  }
}
