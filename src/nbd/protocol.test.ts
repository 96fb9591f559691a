import assert from "node:assert/strict";
import { it } from "node:test";
import {
  decodeRequest,
  encodeOffsetDataHeader,
  encodeSimpleReply,
  NBD_CMD_READ,
  NBD_REQUEST_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from "./protocol.ts";

function request(offset: bigint): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(NBD_CMD_READ, 6);
  b.write("cookie!!", 8, "latin1");
  b.writeBigUInt64BE(offset, 16);
  b.writeUInt32BE(4096, 24);
  return b;
}

it("request offsets decode exactly up to 2^53 - 1, and anything larger stays out of range", () => {
  for (const o of [0n, 4096n, 2n ** 32n - 1n, 2n ** 32n + 5n, 2n ** 53n - 1n]) {
    assert.equal(decodeRequest(request(o)).offset, Number(o), String(o));
  }
  for (const o of [2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n]) {
    assert.equal(decodeRequest(request(o)).offset, Number.MAX_SAFE_INTEGER, String(o));
  }
  const r = decodeRequest(request(7n));
  assert.equal(r.handle.toString("latin1"), "cookie!!");
  assert.equal(r.length, 4096);
});

it("reply headers carry the cookie, the length and the offset, every byte written", () => {
  const cookie = Buffer.from("cookie!!", "latin1");
  for (const offset of [0, 2 ** 32 - 1, 2 ** 32 + 4096, 2 ** 53 - 1]) {
    const h = encodeOffsetDataHeader(cookie, offset, 4096);
    assert.equal(h.length, 28);
    assert.equal(h.readUInt32BE(0), NBD_STRUCTURED_REPLY_MAGIC);
    assert.equal(h.subarray(8, 16).toString("latin1"), "cookie!!");
    assert.equal(h.readUInt32BE(16), 8 + 4096);
    assert.equal(h.readBigUInt64BE(20), BigInt(offset));
  }
  const s = encodeSimpleReply(cookie, 5);
  assert.deepEqual([...s.subarray(0, 8)], [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5]);
  assert.equal(s.subarray(8).toString("latin1"), "cookie!!");
});
