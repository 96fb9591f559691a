// A local file (raw image, ISO) as a block device.
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { checkRange, dataExtent, ReadOnlyError } from "./block-device.ts";
import type { BlockDevice, Extent, WriteOptions } from "./block-device.ts";
import { InPlaceReads } from "./in-place-reads.ts";

export class FileDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly #fh: FileHandle;
  readonly #inPlace = new InPlaceReads();

  private constructor(fh: FileHandle, size: number, readOnly: boolean) {
    this.#fh = fh;
    this.size = size;
    this.readOnly = readOnly;
  }

  static async open(path: string, options: { readOnly?: boolean } = {}): Promise<FileDevice> {
    const readOnly = options.readOnly ?? true;
    const fh = await open(path, readOnly ? "r" : "r+");
    const st = await fh.stat();
    const size = st.isBlockDevice() ? await blockDeviceSize(fh) : st.size;
    return new FileDevice(fh, size, readOnly);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(offset, buf);
    return buf;
  }

  async readInto(offset: number, into: Buffer): Promise<void> {
    const length = into.length;
    checkRange(this, offset, length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#fh.read(into, done, length - done, offset + done);
      if (bytesRead === 0) {
        into.fill(0, done); // the file shrank under us: beyond EOF reads as zeros
        break;
      }
      done += bytesRead;
    }
  }

  /** A small read in place, while the file's reads come from the page cache (InPlaceReads). */
  readIntoNow(offset: number, into: Buffer): boolean {
    if (!this.#inPlace.allowed(into.length)) return false;
    checkRange(this, offset, into.length);
    const n = this.#inPlace.read(this.#fh.fd, into, offset);
    if (n < into.length) into.fill(0, n); // as readInto: the file shrank under us
    return true;
  }

  async write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError("The device is read-only");
    checkRange(this, offset, data.length);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.#fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (options.fua) await this.#fh.datasync();
  }

  async writeZeroes(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    const block = Buffer.alloc(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += block.length) {
      await this.write(offset + done, block.subarray(0, Math.min(block.length, length - done)));
    }
    if (options.fua) await this.#fh.datasync();
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.#fh.datasync();
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return Promise.resolve(dataExtent(offset, length));
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }
}

async function blockDeviceSize(fh: FileHandle): Promise<number> {
  // Block devices report size 0 in stat; find the end by reading the last byte's position.
  let lo = 0;
  let hi = 2 ** 50;
  const one = Buffer.alloc(1);
  while (lo < hi) {
    const mid = Math.floor((lo + hi + 1) / 2);
    const { bytesRead } = await fh.read(one, 0, 1, mid - 1);
    if (bytesRead === 1) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
