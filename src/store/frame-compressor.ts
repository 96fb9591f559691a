// zstd frames from one reused compression context. zstdCompressSync makes and frees a context
// per call: for 64 KiB chunks that was most of a pack worker's time (its tables set up anew)
// and most of its memory (each call's output a new buffer for the collector). This keeps one
// context, one output buffer, and returns a view of it, valid until the next call.
// It drives the context of a ZstdCompress stream directly (the handle Node's own synchronous
// calls use); where that is not available, or a frame does not fit, zstdCompressSync.
import { constants, createZstdCompress, zstdCompressSync } from "node:zlib";
import type { ZstdCompress } from "node:zlib";

interface ZstdHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOffset: number,
    inLength: number,
    output: Uint8Array,
    outOffset: number,
    outLength: number,
  ): void;
  reset(): void;
}

/** zstd's bound on a frame of `n` bytes (ZSTD_COMPRESSBOUND), plus room for the header. */
export function frameBound(n: number): number {
  return n + (n >> 8) + (n < 128 * 1024 ? (128 * 1024 - n) >> 11 : 0) + 64;
}

export class FrameCompressor {
  readonly #level: number;
  readonly #maxInput: number;
  readonly #stream: ZstdCompress;
  readonly #handle: ZstdHandle | null;
  readonly #state: Uint32Array | null;
  readonly #out: Buffer;
  #error: Error | null = null;

  /** Frames at zstd `level` of inputs up to `maxInput` bytes (larger ones are compressed too). */
  constructor(level: number, maxInput: number) {
    this.#level = level;
    this.#maxInput = maxInput;
    this.#stream = createZstdCompress({ params: { [constants.ZSTD_c_compressionLevel]: level } });
    this.#stream.on("error", (err: Error) => (this.#error = err));
    const inner = this.#stream as unknown as { _handle?: ZstdHandle; _writeState?: unknown };
    const usable =
      typeof inner._handle?.writeSync === "function" && inner._writeState instanceof Uint32Array;
    this.#handle = usable ? inner._handle! : null;
    this.#state = usable ? (inner._writeState as Uint32Array) : null;
    this.#out = Buffer.allocUnsafe(usable ? frameBound(maxInput) : 0);
  }

  /** Whether frames come from the reused context (else from zstdCompressSync). */
  get reused(): boolean {
    return this.#handle !== null;
  }

  /** One whole zstd frame of `data`: a view of this compressor's buffer until the next call. */
  compress(data: Uint8Array): Buffer {
    const handle = this.#handle;
    if (handle && this.#state && data.length <= this.#maxInput && !this.#error) {
      const out = this.#out;
      handle.writeSync(constants.ZSTD_e_end, data, 0, data.length, out, 0, out.length);
      const availOut = this.#state[0];
      const availIn = this.#state[1];
      // All input taken and room left: the frame is complete.
      if (!this.#error && availIn === 0 && availOut > 0) {
        return out.subarray(0, out.length - availOut);
      }
      handle.reset(); // the next frame starts clean
    }
    return zstdCompressSync(data, { params: { [constants.ZSTD_c_compressionLevel]: this.#level } });
  }

  close(): void {
    this.#stream.close();
  }
}
