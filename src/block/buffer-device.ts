// A read-only device over bytes in memory (small images, boot files, tests).
import { checkRange, ReadOnlyError } from "./block-device.ts";
import type { BlockDevice } from "./block-device.ts";

export class BufferDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  readonly #data: Buffer;

  constructor(data: Buffer) {
    this.#data = data;
    this.size = data.length;
  }

  read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    return Promise.resolve(Buffer.from(this.#data.subarray(offset, offset + length)));
  }

  write(): Promise<void> {
    return Promise.reject(new ReadOnlyError("A buffer device is read-only"));
  }

  async close(): Promise<void> {}
}
