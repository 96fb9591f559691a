// Access tracer: records the first access to each region (offset, length, time) to a boot
// profile file, in the order the machine asked for them. Passes everything through.
import { closeSync, openSync, writeSync } from "node:fs";
import type { BlockDevice } from "./block-device.ts";
import { PassThroughDevice } from "./pass-through.ts";
import { encodeProfileLine, PROFILE_HEADER } from "./profile.ts";

/** Granularity of "first access": 4 KiB, a page and a filesystem block. */
export const TRACE_BLOCK = 4096;

export class TraceDevice extends PassThroughDevice {
  readonly #seen: Uint8Array;
  readonly #fd: number;
  readonly #started = performance.now();
  entries = 0;

  constructor(next: BlockDevice, path: string) {
    super(next);
    this.#seen = new Uint8Array(Math.ceil(Math.ceil(next.size / TRACE_BLOCK) / 8));
    this.#fd = openSync(path, "w");
    writeSync(this.#fd, `${PROFILE_HEADER}\n`);
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
        lines += encodeProfileLine({ offset: from, length: to - from, ms });
        this.entries++;
        runStart = -1;
      }
    }
    // Appended synchronously: a profile is small, and a crash keeps what was recorded.
    if (lines) writeSync(this.#fd, lines);
  }

  override read(offset: number, length: number): Promise<Buffer> {
    this.#record(offset, length);
    return this.next.read(offset, length);
  }

  override async close(): Promise<void> {
    closeSync(this.#fd);
    await this.next.close();
  }
}
