// Logging that a flood cannot turn into a flood of log lines: the first event of a kind is
// logged, then at most one line per interval, saying how many were left out in between.

/** One line per kind per this many milliseconds at most. */
export const DEFAULT_LOG_INTERVAL_MS = 10_000;

/** Kinds remembered at most (kinds may be client addresses). */
const MAX_KINDS = 4096;

export class RateLimitedLog {
  readonly #intervalMs: number;
  readonly #last = new Map<string, { at: number; suppressed: number }>();

  constructor(options: { intervalMs?: number } = {}) {
    this.#intervalMs = options.intervalMs ?? DEFAULT_LOG_INTERVAL_MS;
  }

  /**
   * Calls `write(suppressed)` when a line of this kind may be written now (`suppressed`: how
   * many were left out since the last one), else only counts it.
   */
  hit(kind: string, write: (suppressed: number) => void): void {
    const now = performance.now();
    const last = this.#last.get(kind);
    if (last && now - last.at < this.#intervalMs) {
      last.suppressed++;
      return;
    }
    if (this.#last.size >= MAX_KINDS) this.#last.clear(); // kinds keyed by address: bounded
    this.#last.set(kind, { at: now, suppressed: 0 });
    write(last?.suppressed ?? 0);
  }
}
