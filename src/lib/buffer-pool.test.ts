import assert from "node:assert/strict";
import { it } from "node:test";
import { BufferPool } from "./buffer-pool.ts";

it("buffer pool: exact lengths, reused once given back, bounded while idle", () => {
  const pool = new BufferPool(64 * 1024, 1024 * 1024);
  const a = pool.take(5000);
  assert.equal(a.length, 5000);
  pool.give(a);
  const b = pool.take(7000); // the same 8 KiB class
  assert.equal(b.buffer, a.buffer, "reused");
  assert.equal(b.length, 7000);
  assert.notEqual(pool.take(7000).buffer, a.buffer, "taken twice: a new one");
  // Over the largest pooled size: never kept.
  const big = pool.take(2 * 1024 * 1024);
  pool.give(big);
  assert.notEqual(pool.take(2 * 1024 * 1024).buffer, big.buffer);
  // At most 64 KiB idle: of ten 16 KiB buffers given back, four are kept.
  const many = Array.from({ length: 10 }, () => pool.take(16 * 1024));
  for (const m of many) pool.give(m);
  const again = Array.from({ length: 10 }, () => pool.take(16 * 1024));
  const reused = again.filter((x) => many.some((m) => m.buffer === x.buffer)).length;
  assert.equal(reused, 4);
  // A buffer not from the pool (a slice of another) is not taken in.
  const foreign = Buffer.alloc(8192).subarray(4096);
  pool.give(foreign);
});
