// Small reads of a cache file done in place, on the calling thread: from the page cache a
// thread-pool round trip costs more than the copy. One that took long went to the disk (the
// page cache let the file go): then reads go through the thread pool for a while, so the event
// loop waits for the disk at most once per BACKOFF_MS.
import { readSync } from "node:fs";

/** Reads up to this size may be done in place. */
export const IN_PLACE_MAX = 64 * 1024;
/** A read in place that took longer went to the disk... */
const SLOW_MS = 1;
/** ...and reads of the next 10 s go through the thread pool. */
const BACKOFF_MS = 10_000;

export class InPlaceReads {
  #asyncUntil = 0;

  /** Whether a read of `length` bytes may be done in place now. */
  allowed(length: number): boolean {
    return length > 0 && length <= IN_PLACE_MAX && performance.now() >= this.#asyncUntil;
  }

  /**
   * Fills `into` from `position` of `fd`, in place; returns the bytes read (fewer at the file's
   * end), having timed the read.
   */
  read(fd: number, into: Buffer, position: number): number {
    const started = performance.now();
    let done = 0;
    while (done < into.length) {
      const n = readSync(fd, into, done, into.length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    const took = performance.now() - started;
    if (took > SLOW_MS) this.#asyncUntil = started + took + BACKOFF_MS;
    return done;
  }
}
