// A device lent to one user by its owner: closing it does not close the device beneath (the
// owner does, when nobody else uses it), and the bytes read through it are counted. An ISO's
// cache lent to the NBD server beside HTTP, a shared base under many overlays.
import { readIntoFrom } from "./block-device.ts";
import { PassThroughDevice } from "./pass-through.ts";

export class BorrowedDevice extends PassThroughDevice {
  /** Bytes read through this device. */
  bytesRead = 0;

  override async read(offset: number, length: number): Promise<Buffer> {
    const data = await super.read(offset, length);
    this.bytesRead += data.length;
    return data;
  }

  async readInto(offset: number, into: Buffer): Promise<void> {
    await readIntoFrom(this.next, offset, into);
    this.bytesRead += into.length;
  }

  readIntoNow(offset: number, into: Buffer): boolean {
    if (!this.next.readIntoNow?.(offset, into)) return false;
    this.bytesRead += into.length;
    return true;
  }

  override close(): Promise<void> {
    return Promise.resolve();
  }
}
