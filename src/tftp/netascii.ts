// netascii (RFC 764, used by RFC 1350 section 5 mode "netascii"), converted as the transfer
// goes: the file is read in small raw chunks, each converted on its own (LF becomes CR LF, a
// bare CR becomes CR NUL), and only the converted bytes the transfer may still resend are kept.
// A CR LF pair split by a block boundary needs no state of its own: blocks are cut from the
// converted stream, so the LF simply starts the next block.
import type { TftpSource } from "./tree.ts";

/** Raw bytes converted at a time: at most 128 KiB of output, well under 1 ms of CPU. */
export const NETASCII_CHUNK = 64 * 1024;

const LF = 0x0a;
const CR = 0x0d;

/** netascii for one chunk of a file (conversion is byte-by-byte, so chunks are independent). */
export function toNetascii(raw: Buffer): Buffer {
  let specials = 0;
  for (let i = raw.indexOf(LF); i >= 0; i = raw.indexOf(LF, i + 1)) specials++;
  for (let i = raw.indexOf(CR); i >= 0; i = raw.indexOf(CR, i + 1)) specials++;
  if (specials === 0) return raw;
  const out = Buffer.allocUnsafe(raw.length + specials);
  let o = 0;
  for (let i = 0; i < raw.length; i++) {
    const byte = raw[i];
    if (byte === LF) {
      out[o++] = CR;
      out[o++] = LF;
    } else if (byte === CR) {
      out[o++] = CR;
      out[o++] = 0;
    } else {
      out[o++] = byte;
    }
  }
  return out;
}

/**
 * The netascii form of a source, by offset in the converted stream. Its size is unknown until
 * the end is reached (so no tsize is offered for netascii); reads must move forward, except
 * back to the last offset passed to `discardBefore` (a window resent after a loss).
 */
export class NetasciiSource {
  readonly size = null;
  readonly #raw: TftpSource;
  readonly #chunk: number;
  /** Converted bytes [#bufAt, #bufAt + #buf.length). */
  #buf = Buffer.alloc(0);
  #bufAt = 0;
  /** The raw offset the next chunk is read from. */
  #rawAt = 0;
  #floor = 0;
  #ended = false;

  constructor(raw: TftpSource, options: { chunk?: number } = {}) {
    this.#raw = raw;
    this.#chunk = options.chunk ?? NETASCII_CHUNK;
  }

  get #eof(): boolean {
    return this.#ended || this.#rawAt >= this.#raw.size;
  }

  /** The transfer will not ask for converted bytes before `offset` again. */
  discardBefore(offset: number): void {
    if (offset > this.#floor) this.#floor = offset;
  }

  peek(offset: number, length: number): Buffer | null {
    if (offset < this.#bufAt) return null;
    const end = offset + length;
    const have = this.#bufAt + this.#buf.length;
    if (end > have && !this.#eof) return null;
    return this.#buf.subarray(offset - this.#bufAt, Math.min(end, have) - this.#bufAt);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < this.#bufAt) {
      // Only when a caller rewinds past what it released: start the conversion over.
      this.#buf = Buffer.alloc(0);
      this.#bufAt = 0;
      this.#rawAt = 0;
      this.#ended = false;
      this.#floor = Math.min(this.#floor, offset);
    }
    const end = offset + length;
    while (this.#bufAt + this.#buf.length < end && !this.#eof) {
      const raw = await this.#raw.read(this.#rawAt, this.#chunk);
      if (raw.length === 0) {
        this.#ended = true; // the file shrank while being sent: it ends here
        break;
      }
      this.#rawAt += raw.length;
      const keepFrom = Math.min(
        Math.max(0, Math.min(this.#floor, offset) - this.#bufAt),
        this.#buf.length,
      );
      // (A copy: `raw` may be a view of the file reader's larger slice.)
      this.#buf = Buffer.concat([this.#buf.subarray(keepFrom), toNetascii(raw)]);
      this.#bufAt += keepFrom;
    }
    return this.peek(offset, length) ?? Buffer.alloc(0);
  }

  close(): Promise<void> {
    return this.#raw.close();
  }
}
