// Access tracer: records the first access to each region (offset, length, time), in the order
// the machine asked for them: a boot profile, kept in memory and, when given a path, appended to
// a file. Counts the distinct bytes read. Passes everything through.
import { closeSync, openSync, writeSync } from "node:fs";
import { readIntoFrom } from "./block-device.ts";
import type { BlockDevice } from "./block-device.ts";
import { PassThroughDevice } from "./pass-through.ts";
import { encodeProfile, encodeProfileLine, PROFILE_HEADER } from "../store/profile.ts";
import type { ProfileEntry } from "../store/profile.ts";

/** Granularity of "first access": 4 KiB, a page and a filesystem block. */
export const TRACE_BLOCK = 4096;

export class TraceDevice extends PassThroughDevice {
  readonly #seen: Uint8Array;
  readonly #fd: number | null;
  readonly #started = performance.now();
  /** The first accesses so far, in order. */
  readonly profile: ProfileEntry[] = [];
  /** Distinct bytes read so far (whole 4 KiB blocks). */
  coveredBytes = 0;

  constructor(next: BlockDevice, path: string | null) {
    super(next);
    this.#seen = new Uint8Array(Math.ceil(Math.ceil(next.size / TRACE_BLOCK) / 8));
    this.#fd = path === null ? null : openSync(path, "w");
    if (this.#fd !== null) writeSync(this.#fd, `${PROFILE_HEADER}\n`);
  }

  get entries(): number {
    return this.profile.length;
  }

  /** The profile so far as profile-file text. */
  text(): string {
    return encodeProfile(this.profile);
  }

  #record(offset: number, length: number): void {
    if (length === 0) return;
    const first = Math.floor(offset / TRACE_BLOCK);
    const last = Math.floor((offset + length - 1) / TRACE_BLOCK);
    let runStart = -1;
    const ms = performance.now() - this.#started;
    let lines = "";
    for (let b = first; b <= last + 1; b++) {
      const fresh = b <= last && (this.#seen[b >> 3] & (1 << (b & 7))) === 0;
      if (fresh) {
        this.#seen[b >> 3] |= 1 << (b & 7);
        if (runStart < 0) runStart = b;
      } else if (runStart >= 0) {
        const from = runStart * TRACE_BLOCK;
        const to = Math.min(this.size, b * TRACE_BLOCK);
        const entry = { offset: from, length: to - from, ms };
        this.profile.push(entry);
        this.coveredBytes += entry.length;
        lines += encodeProfileLine(entry);
        runStart = -1;
      }
    }
    // Appended synchronously: a profile is small, and a crash keeps what was recorded.
    if (lines && this.#fd !== null) writeSync(this.#fd, lines);
  }

  override read(offset: number, length: number): Promise<Buffer> {
    this.#record(offset, length);
    return this.next.read(offset, length);
  }

  readInto(offset: number, into: Buffer): Promise<void> {
    this.#record(offset, into.length);
    return readIntoFrom(this.next, offset, into);
  }

  readIntoNow(offset: number, into: Buffer): boolean {
    if (!this.next.readIntoNow?.(offset, into)) return false;
    this.#record(offset, into.length);
    return true;
  }

  override async close(): Promise<void> {
    if (this.#fd !== null) closeSync(this.#fd);
    await this.next.close();
  }
}
