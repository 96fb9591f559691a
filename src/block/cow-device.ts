// Copy-on-write overlay over a read-only `next` device: the per-client overlay over a shared
// base, and VMSeed's growing disk. One sparse file holds a header, the bitmap of written blocks
// and the written blocks at their own offsets, so the file grows only with what is written and
// deleting it resets the disk. A block's bit is set only after its data is written; FLUSH and
// FUA fdatasync the one file, so every write acknowledged before a FLUSH survives a kill or crash.
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { checkRange, mergeExtents, readIntoFrom, settleAll } from "./block-device.ts";
import type { BlockDevice, Extent, WriteOptions } from "./block-device.ts";

export const COW_BLOCK_SIZE = 4096;
const MAGIC = "INETBOOT-COW-1\n";
const HEADER_SIZE = 4096;
const DATA_ALIGN = 1024 * 1024;

export class OverlayMismatchError extends Error {
  readonly code = "ERR_OVERLAY_MISMATCH";
}

interface Layout {
  blocks: number;
  bitmapBytes: number;
  dataOffset: number;
}

function layoutFor(size: number): Layout {
  const blocks = Math.ceil(size / COW_BLOCK_SIZE);
  const bitmapBytes = Math.ceil(blocks / 8);
  const dataOffset = Math.ceil((HEADER_SIZE + bitmapBytes) / DATA_ALIGN) * DATA_ALIGN;
  return { blocks, bitmapBytes, dataOffset };
}

export class CowDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = false;
  readonly #next: BlockDevice;
  readonly #fh: FileHandle;
  readonly #bitmap: Buffer;
  readonly #layout: Layout;
  /** Per-block chains so overlapping writes to one block never interleave. */
  readonly #locks = new Map<number, Promise<void>>();

  private constructor(next: BlockDevice, fh: FileHandle, bitmap: Buffer, layout: Layout) {
    this.#next = next;
    this.size = next.size;
    this.#fh = fh;
    this.#bitmap = bitmap;
    this.#layout = layout;
  }

  /**
   * Opens (or creates) the overlay `path` over `next`. `baseId` names the base (an index
   * digest, a URL); an overlay made for another base is refused rather than silently mixed.
   */
  static async open(
    next: BlockDevice,
    path: string,
    options: { baseId: string },
  ): Promise<CowDevice> {
    const layout = layoutFor(next.size);
    const fh = await open(path, "a+").then(async (h) => {
      await h.close();
      return open(path, "r+");
    });
    try {
      const st = await fh.stat();
      const header = Buffer.alloc(HEADER_SIZE);
      if (st.size === 0) {
        const text = JSON.stringify({
          blockSize: COW_BLOCK_SIZE,
          size: next.size,
          base: options.baseId,
        });
        header.write(MAGIC + text + "\n");
        await fh.write(header, 0, HEADER_SIZE, 0);
        await fh.truncate(layout.dataOffset);
        await fh.datasync();
        return new CowDevice(next, fh, Buffer.alloc(layout.bitmapBytes), layout);
      }
      await fh.read(header, 0, HEADER_SIZE, 0);
      const text = header.toString("utf8").replace(/\0+$/, "");
      if (!text.startsWith(MAGIC))
        throw new OverlayMismatchError(
          `${path} is not an inetboot overlay; move it away or pass another --cow file`,
        );
      const meta = JSON.parse(text.slice(MAGIC.length)) as {
        blockSize: number;
        size: number;
        base: string;
      };
      if (
        meta.blockSize !== COW_BLOCK_SIZE ||
        meta.size !== next.size ||
        meta.base !== options.baseId
      ) {
        throw new OverlayMismatchError(
          `Overlay ${path} was made for base ${meta.base} (${meta.size} bytes), not ${options.baseId} (${next.size} bytes); delete it to start a fresh disk`,
        );
      }
      const bitmap = Buffer.alloc(layout.bitmapBytes);
      await fh.read(bitmap, 0, layout.bitmapBytes, HEADER_SIZE);
      return new CowDevice(next, fh, bitmap, layout);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  #has(block: number): boolean {
    return (this.#bitmap[block >> 3] & (1 << (block & 7))) !== 0;
  }

  /** Blocks written so far (what the overlay holds). */
  get writtenBlocks(): number {
    let n = 0;
    for (const byte of this.#bitmap) {
      let b = byte;
      while (b) {
        n += b & 1;
        b >>= 1;
      }
    }
    return n;
  }

  /** Splits [offset, end) into runs of blocks that come from the same side (overlay or base). */
  *#runs(offset: number, end: number): Generator<{ from: number; to: number; mine: boolean }> {
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / COW_BLOCK_SIZE);
      const mine = this.#has(block);
      let to = Math.min(end, (block + 1) * COW_BLOCK_SIZE);
      while (to < end && this.#has(Math.floor(to / COW_BLOCK_SIZE)) === mine) {
        to = Math.min(end, to + COW_BLOCK_SIZE);
      }
      yield { from: pos, to, mine };
      pos = to;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = Buffer.allocUnsafe(length);
    await this.readInto(offset, out);
    return out;
  }

  /** Fills `into`: written blocks from the overlay, the rest from the base, each in place. */
  async readInto(offset: number, into: Buffer): Promise<void> {
    checkRange(this, offset, into.length);
    const jobs: Promise<void>[] = [];
    for (const { from, to, mine } of this.#runs(offset, offset + into.length)) {
      const part = into.subarray(from - offset, to - offset);
      jobs.push(
        mine
          ? this.#readOverlay(part, this.#layout.dataOffset + from)
          : readIntoFrom(this.#next, from, part),
      );
    }
    await settleAll(jobs);
  }

  /** At once only where the overlay holds none of the range: the base answers for all of it. */
  readIntoNow(offset: number, into: Buffer): boolean {
    if (!this.#next.readIntoNow || into.length === 0) return false;
    checkRange(this, offset, into.length);
    const last = Math.floor((offset + into.length - 1) / COW_BLOCK_SIZE);
    for (let b = Math.floor(offset / COW_BLOCK_SIZE); b <= last; b++)
      if (this.#has(b)) return false;
    return this.#next.readIntoNow(offset, into);
  }

  /** Overlay bytes at `position` of its file; past the file's end (never written) reads zeros. */
  async #readOverlay(into: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.#fh.read(into, done, into.length - done, position + done);
      if (bytesRead === 0) {
        into.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  async #withBlocks<T>(first: number, last: number, fn: () => Promise<T>): Promise<T> {
    const waits: Promise<void>[] = [];
    for (let b = first; b <= last; b++) {
      const prev = this.#locks.get(b);
      if (prev) waits.push(prev);
    }
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    for (let b = first; b <= last; b++) this.#locks.set(b, mine);
    await Promise.all(waits);
    try {
      return await fn();
    } finally {
      for (let b = first; b <= last; b++) if (this.#locks.get(b) === mine) this.#locks.delete(b);
      release();
    }
  }

  async write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    checkRange(this, offset, data.length);
    if (data.length === 0) return;
    const first = Math.floor(offset / COW_BLOCK_SIZE);
    const last = Math.floor((offset + data.length - 1) / COW_BLOCK_SIZE);
    await this.#withBlocks(first, last, async () => {
      const start = first * COW_BLOCK_SIZE;
      const end = Math.min(this.size, (last + 1) * COW_BLOCK_SIZE);
      let buf: Buffer;
      if (start === offset && end === offset + data.length) {
        buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      } else {
        // Partial blocks at the edges: fill them from what the disk holds now.
        buf = Buffer.alloc(end - start);
        const head = await this.read(start, Math.min(COW_BLOCK_SIZE, end - start));
        head.copy(buf, 0);
        if (last > first) {
          const tailStart = last * COW_BLOCK_SIZE;
          const tail = await this.read(tailStart, end - tailStart);
          tail.copy(buf, tailStart - start);
        }
        Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(buf, offset - start);
      }
      await writeAll(this.#fh, buf, this.#layout.dataOffset + start);
      await this.#mark(first, last);
      if (options.fua) await this.#fh.datasync();
    });
  }

  /** Sets the blocks' bits and writes the changed bitmap bytes (after the data). */
  async #mark(first: number, last: number): Promise<void> {
    for (let b = first; b <= last; b++) this.#bitmap[b >> 3] |= 1 << (b & 7);
    const from = first >> 3;
    const to = (last >> 3) + 1;
    await writeAll(this.#fh, this.#bitmap.subarray(from, to), HEADER_SIZE + from);
  }

  async writeZeroes(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    const step = 4 * 1024 * 1024;
    const zeros = Buffer.alloc(Math.min(step, length));
    for (let done = 0; done < length; done += step) {
      await this.write(offset + done, zeros.subarray(0, Math.min(step, length - done)));
    }
    if (options.fua) await this.#fh.datasync();
  }

  trim(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }

  async flush(): Promise<void> {
    await this.#fh.datasync();
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange(this, offset, length);
    const out: Extent[] = [];
    for (const { from, to, mine } of this.#runs(offset, offset + length)) {
      if (mine || !this.#next.extents) {
        out.push({ offset: from, length: to - from, hole: false, zero: false });
        continue;
      }
      for (const e of await this.#next.extents(from, to - from)) {
        const start = Math.max(e.offset, from);
        const stop = Math.min(e.offset + e.length, to);
        if (stop > start) out.push({ ...e, offset: start, length: stop - start });
      }
    }
    return mergeExtents(out);
  }

  async close(): Promise<void> {
    await this.#fh.datasync().catch(() => undefined);
    await this.#fh.close();
    await this.#next.close();
  }
}

async function writeAll(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}
