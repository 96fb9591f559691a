// Buffers for replies, reused: a server reading a device into a buffer (readInto) takes one from
// here and gives it back once the socket has sent it. Allocating a fresh buffer per reply made
// the garbage collector the largest cost of a warm sequential read (NBD) and of a cached ISO
// served over HTTP.

/** The smallest size class: smaller replies share one. */
const MIN_CLASS = 4096;

export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #maxFreeBytes: number;
  readonly #maxBuffer: number;
  #freeBytes = 0;

  /** Keeps at most `maxFreeBytes` idle; replies over `maxBuffer` are never pooled. */
  constructor(maxFreeBytes: number, maxBuffer: number) {
    this.#maxFreeBytes = maxFreeBytes;
    this.#maxBuffer = maxBuffer;
  }

  /** A buffer of exactly `length` bytes (contents unspecified); hand it back with give(). */
  take(length: number): Buffer {
    if (length > this.#maxBuffer) return Buffer.allocUnsafeSlow(length);
    const size = classOf(length);
    const whole = this.#free.get(size)?.pop();
    if (whole) this.#freeBytes -= size;
    return (whole ?? Buffer.allocUnsafeSlow(size)).subarray(0, length);
  }

  /** `buf` (from take()) is no longer used by anyone. */
  give(buf: Buffer): void {
    const size = buf.buffer.byteLength;
    if (size > this.#maxBuffer || size !== classOf(size) || buf.byteOffset !== 0) return;
    if (this.#freeBytes + size > this.#maxFreeBytes) return;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, (list = []));
    list.push(Buffer.from(buf.buffer, 0, size));
    this.#freeBytes += size;
  }
}

function classOf(length: number): number {
  return length <= MIN_CLASS ? MIN_CLASS : 2 ** Math.ceil(Math.log2(length));
}
