import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { it } from "node:test";
import { zstdDecompressSync } from "node:zlib";
import { FrameCompressor, frameBound } from "./frame-compressor.ts";

it("frame compressor: whole frames from one reused context, each decodable alone", () => {
  const c = new FrameCompressor(3, 256 * 1024);
  assert.ok(c.reused, "this Node offers the context: the fallback would be slower");
  const inputs = [
    Buffer.alloc(0),
    Buffer.alloc(65536, 7),
    randomBytes(256 * 1024), // incompressible, the largest chunk
    Buffer.from("text ".repeat(20_000)),
    randomBytes(1),
    randomBytes(300 * 1024), // over maxInput: the fallback
  ];
  for (const data of inputs) {
    const frame = Buffer.from(c.compress(data));
    assert.ok(frame.length <= frameBound(data.length), "within zstd's bound");
    assert.ok(zstdDecompressSync(frame).equals(data), `${data.length} bytes round-trip`);
  }
  // The view is reused: copy what must outlive the next call.
  const a = c.compress(Buffer.alloc(1000, 1));
  const first = Buffer.from(a);
  assert.ok(zstdDecompressSync(c.compress(Buffer.alloc(1000, 2))).equals(Buffer.alloc(1000, 2)));
  assert.ok(zstdDecompressSync(first).equals(Buffer.alloc(1000, 1)));
  c.close();
});
