// A file of an ISO as a read-only BlockDevice: reads map onto its extents in the image (one,
// or several for files of 4 GiB and more).
import { checkRange, dataExtent, readIntoFrom, settleAll } from "../block/block-device.ts";
import type { BlockDevice, Extent } from "../block/block-device.ts";
import type { IsoEntry } from "./iso-entry.ts";

/** A file of an ISO as a read-only device: reads map onto its extents in the image. */
export class IsoFileDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  readonly #device: BlockDevice;
  readonly #extents: { offset: number; size: number }[];

  constructor(device: BlockDevice, entry: IsoEntry) {
    this.#device = device;
    this.#extents = entry.extents ?? [{ offset: entry.offset, size: entry.size }];
    this.size = entry.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    const parts: Promise<Buffer>[] = [];
    let base = 0;
    for (const e of this.#extents) {
      const from = Math.max(offset, base);
      const to = Math.min(offset + length, base + e.size);
      if (from < to) parts.push(this.#device.read(e.offset + (from - base), to - from));
      base += e.size;
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(await Promise.all(parts));
  }

  /** Fills `into` from the file's extents (see BlockDevice.readInto). */
  async readInto(offset: number, into: Buffer): Promise<void> {
    checkRange(this, offset, into.length);
    const jobs: Promise<void>[] = [];
    let base = 0;
    for (const e of this.#extents) {
      const from = Math.max(offset, base);
      const to = Math.min(offset + into.length, base + e.size);
      if (from < to) {
        const part = into.subarray(from - offset, to - offset);
        jobs.push(readIntoFrom(this.#device, e.offset + (from - base), part));
      }
      base += e.size;
    }
    // Extents (from the ISO's directory) that fall short of the file's size: zeros, never what
    // the buffer held before.
    if (offset + into.length > base) into.fill(0, Math.max(0, base - offset));
    await settleAll(jobs);
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return Promise.resolve(dataExtent(offset, length));
  }

  async close(): Promise<void> {}
}
