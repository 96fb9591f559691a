// Small reads of a cache file done in place, on the calling thread: from the page cache a
// thread-pool round trip costs more than the copy. Reads that wait for the disk (the page cache
// let the file go) send reads to the thread pool for a while, so the event loop waits for the
// disk at most twice per BACKOFF_MS. A read that was merely slow is not such a wait: on a busy
// or virtual machine a preempted thread's read takes milliseconds too, and must not cost ten
// seconds of slower reads. So a slow read counts only when the process read from the disk
// since the last one (getrusage's block input), or when it took so long (LONG_MS) that it was a
// wait whatever the count says (a network filesystem's reads are not block input); and it
// takes two within a second.
import { readSync } from "node:fs";

/** Reads up to this size may be done in place. */
export const IN_PLACE_MAX = 64 * 1024;
/** A read in place that took longer, with blocks read from the disk meanwhile, waited for it... */
const SLOW_MS = 1;
/** A read in place this long waited for storage even without block input (NFS, FUSE). */
const LONG_MS = 10;
/** ...and a second one within this time says the page cache no longer holds the file... */
const STRIKE_WINDOW_MS = 1000;
/** ...so reads of the next 10 s go through the thread pool. */
const BACKOFF_MS = 10_000;

export class InPlaceReads {
  readonly #now: () => number;
  readonly #diskReads: () => number;
  #asyncUntil = -Infinity;
  #lastSlow = -Infinity;
  /**
   * Block input at the last slow read, or at the first read: taken lazily, since a device
   * opened for an HTTP body never reads in place and need not pay a getrusage.
   */
  #diskReadsSeen = -1;

  /** `now` (milliseconds) and `diskReads` (blocks read from the disk so far): for tests. */
  constructor(options: { now?: () => number; diskReads?: () => number } = {}) {
    this.#now = options.now ?? (() => performance.now());
    this.#diskReads = options.diskReads ?? (() => process.resourceUsage().fsRead);
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
    if (this.#diskReadsSeen < 0) this.#diskReadsSeen = this.#diskReads();
    const started = this.#now();
    let done = 0;
    while (done < into.length) {
      const n = readSync(fd, into, done, into.length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    const ended = this.#now();
    if (ended - started > SLOW_MS) this.#slow(started, ended);
    return done;
  }

  #slow(started: number, ended: number): void {
    const seen = this.#diskReads();
    const waitedForDisk = seen > this.#diskReadsSeen;
    this.#diskReadsSeen = seen;
    // Preempted: the page cache answered, late.
    if (!waitedForDisk && ended - started < LONG_MS) return;
    if (started - this.#lastSlow < STRIKE_WINDOW_MS) this.#asyncUntil = ended + BACKOFF_MS;
    this.#lastSlow = ended;
  }
}
