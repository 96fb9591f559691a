import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BufferDevice } from "./buffer-device.ts";
import { LazyDevice } from "./lazy-device.ts";

describe("lazy device", () => {
  it("opens its device on first use only, once, and never again after close", async () => {
    let opens = 0;
    const lazy = new LazyDevice(4096, () => {
      opens++;
      return Promise.resolve(new BufferDevice(Buffer.alloc(4096, 3)));
    });
    assert.equal(lazy.size, 4096);
    assert.equal(opens, 0);
    assert.ok(!lazy.opened);
    await lazy.flush(); // nothing to flush yet: does not open
    assert.equal(opens, 0);
    const [a, b] = await Promise.all([lazy.read(0, 2), lazy.read(2, 2)]);
    assert.deepEqual([...a, ...b], [3, 3, 3, 3]);
    assert.equal(opens, 1);
    await lazy.close();
    await assert.rejects(lazy.read(0, 1), { code: "ERR_BLOCK_IO" });
    await assert.rejects(lazy.flush(), { code: "ERR_BLOCK_IO" });
    assert.equal(opens, 1, "a client still attached gets errors, not a fresh device");
  });

  it("a failed open is tried again by the next request", async () => {
    let opens = 0;
    const lazy = new LazyDevice(16, () =>
      ++opens === 1
        ? Promise.reject(new Error("disk full"))
        : Promise.resolve(new BufferDevice(Buffer.alloc(16))),
    );
    await assert.rejects(lazy.read(0, 1), /disk full/);
    assert.deepEqual([...(await lazy.read(0, 1))], [0]);
    assert.equal(opens, 2);
  });
});
