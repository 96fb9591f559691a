// A device opened on first use: the size is known up front (an NBD handshake needs it), the
// device behind it (a machine's copy-on-write overlay: a file and a descriptor) is opened only
// when a client reads or writes. So a request that merely plans a boot costs no file.
import { BlockIoError, readIntoFrom } from "./block-device.ts";
import type { BlockDevice, Extent, WriteOptions } from "./block-device.ts";

export class LazyDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = false;
  readonly #open: () => Promise<BlockDevice>;
  #device: Promise<BlockDevice> | null = null;
  /** The device behind once it is open: reads at once go straight to it. */
  #ready: BlockDevice | null = null;
  #closed = false;

  constructor(size: number, open: () => Promise<BlockDevice>) {
    this.size = size;
    this.#open = open;
  }

  /** Whether the device behind has been opened (or is opening). */
  get opened(): boolean {
    return this.#device !== null;
  }

  #get(): Promise<BlockDevice> {
    // Closed means gone: a client still attached gets I/O errors, never a fresh device.
    if (this.#closed) return Promise.reject(new BlockIoError("the device was closed"));
    if (!this.#device) {
      const p = this.#open();
      this.#device = p;
      p.then(
        (d) => {
          if (this.#device === p) this.#ready = d;
        },
        () => {
          if (this.#device === p) this.#device = null; // the next request tries again
        },
      );
    }
    return this.#device;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return (await this.#get()).read(offset, length);
  }

  async readInto(offset: number, into: Buffer): Promise<void> {
    return readIntoFrom(await this.#get(), offset, into);
  }

  readIntoNow(offset: number, into: Buffer): boolean {
    return this.#ready?.readIntoNow?.(offset, into) ?? false;
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    const d = await this.#get();
    if (!d.write) throw new Error("the device behind is read-only");
    return d.write(offset, data, options);
  }

  async flush(): Promise<void> {
    if (this.#closed) throw new BlockIoError("the device was closed");
    if (this.#device) await (await this.#device).flush?.();
  }

  async trim(offset: number, length: number): Promise<void> {
    await (await this.#get()).trim?.(offset, length);
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    const d = await this.#get();
    if (d.writeZeroes) return d.writeZeroes(offset, length, options);
    return this.write(offset, Buffer.alloc(length), options);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const d = await this.#get();
    if (d.extents) return d.extents(offset, length);
    return [{ offset, length, hole: false, zero: false }];
  }

  /** Closes the device behind, if it was opened. */
  async close(): Promise<void> {
    this.#closed = true;
    const p = this.#device;
    this.#device = null;
    this.#ready = null;
    if (p) await (await p.catch(() => null))?.close();
  }
}
