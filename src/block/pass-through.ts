// The base of block layers: every call goes to `next` unchanged. A layer overrides only what
// it changes, like an nbdkit filter.
import { dataExtent, ReadOnlyError } from "./block-device.ts";
import type { BlockDevice, Extent, WriteOptions } from "./block-device.ts";

export class PassThroughDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  protected readonly next: BlockDevice;

  constructor(next: BlockDevice) {
    this.next = next;
    this.size = next.size;
    this.readOnly = next.readOnly;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.next.read(offset, length);
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    if (!this.next.write) return Promise.reject(new ReadOnlyError("The device is read-only"));
    return this.next.write(offset, data, options);
  }

  flush(): Promise<void> {
    return this.next.flush?.() ?? Promise.resolve();
  }

  trim(offset: number, length: number): Promise<void> {
    return this.next.trim?.(offset, length) ?? Promise.resolve();
  }

  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    if (this.next.writeZeroes) return this.next.writeZeroes(offset, length, options);
    return this.write(offset, Buffer.alloc(length), options);
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    if (this.next.extents) return this.next.extents(offset, length);
    return Promise.resolve(dataExtent(offset, length));
  }

  close(): Promise<void> {
    return this.next.close();
  }
}
