// Small reads of a cache file done in place, on the calling thread: from the page cache a
// thread-pool round trip costs more than the copy. Reads that take long went to the disk (the
// page cache let the file go): then reads go through the thread pool for a while, so the event
// loop waits for the disk at most twice per BACKOFF_MS. One slow read alone is not enough: on a
// busy or virtual machine a read in place is sometimes slow only because the thread was
// preempted, and that should not cost ten seconds of slower reads.
import { readSync } from "node:fs";

/** Reads up to this size may be done in place. */
export const IN_PLACE_MAX = 64 * 1024;
/** A read in place that took longer may have gone to the disk... */
const SLOW_MS = 1;
/** ...and a second one within this time says it did... */
const STRIKE_WINDOW_MS = 1000;
/** ...so reads of the next 10 s go through the thread pool. */
const BACKOFF_MS = 10_000;

export class InPlaceReads {
  readonly #now: () => number;
  #asyncUntil = -Infinity;
  #lastSlow = -Infinity;

  /** `now`: the clock (milliseconds), for tests. */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Whether a read of `length` bytes may be done in place now. */
  allowed(length: number): boolean {
    return length > 0 && length <= IN_PLACE_MAX && this.#now() >= this.#asyncUntil;
  }

  /**
   * Fills `into` from `position` of `fd`, in place; returns the bytes read (fewer at the file's
   * end), having timed the read.
   */
  read(fd: number, into: Buffer, position: number): number {
    const started = this.#now();
    let done = 0;
    while (done < into.length) {
      const n = readSync(fd, into, done, into.length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    const ended = this.#now();
    if (ended - started > SLOW_MS) {
      if (started - this.#lastSlow < STRIKE_WINDOW_MS) this.#asyncUntil = ended + BACKOFF_MS;
      this.#lastSlow = ended;
    }
    return done;
  }
}
