import assert from "node:assert/strict";
import { it } from "node:test";
import fc from "fast-check";
import { NetasciiSource, toNetascii } from "./netascii.ts";
import { BufferSource } from "./tree.ts";

/** RFC 764 over the whole input at once, byte by byte. */
function reference(data: Uint8Array): Buffer {
  const out: number[] = [];
  for (const b of data) {
    if (b === 0x0a) out.push(0x0d, 0x0a);
    else if (b === 0x0d) out.push(0x0d, 0x00);
    else out.push(b);
  }
  return Buffer.from(out);
}

it("toNetascii: LF → CR LF, CR → CR NUL, everything else unchanged", () => {
  assert.deepEqual(toNetascii(Buffer.from("a\nb\r\nc\r")), Buffer.from("a\r\nb\r\0\r\nc\r\0"));
  const plain = Buffer.from("no line ends");
  assert.equal(toNetascii(plain), plain);
});

it("NetasciiSource read block by block (with window resends) equals the whole conversion", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc
        .uint8Array({ maxLength: 3000 })
        .map((a) => a.map((b) => (b % 4 === 0 ? 0x0a : b % 4 === 1 ? 0x0d : b))),
      fc.integer({ min: 1, max: 700 }),
      fc.integer({ min: 8, max: 600 }),
      fc.integer({ min: 1, max: 4 }),
      async (data, chunk, blksize, window) => {
        const src = new NetasciiSource(new BufferSource(Buffer.from(data)), { chunk });
        const blocks: Buffer[] = [];
        let acked = 0;
        for (;;) {
          // Send a window, "lose" it once, resend it from the last ACK, then ACK it.
          for (let pass = 0; pass < 2; pass++) {
            for (let b = acked; b < acked + window; b++) {
              const off = b * blksize;
              const got = src.peek(off, blksize) ?? (await src.read(off, blksize));
              if (pass === 1) blocks[b] = got;
              if (got.length < blksize) break;
            }
          }
          const last = blocks.findIndex((b) => b && b.length < blksize);
          if (last >= 0) {
            blocks.length = last + 1;
            break;
          }
          acked += window;
          src.discardBefore(acked * blksize);
        }
        assert.deepEqual(Buffer.concat(blocks), reference(data));
      },
    ),
    { numRuns: 300 },
  );
});
