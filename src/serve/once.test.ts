import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { OnceState } from "./once.ts";

const A = "52:54:00:00:00:0a";
const B = "52:54:00:00:00:0b";

describe("one-shot entry state", () => {
  it("starts empty when the file does not exist yet, and creates nothing by opening", async (t) => {
    const dir = tempDir(t);
    const state = await OnceState.open(join(dir, "once.json"));
    assert.equal(state.consumed(A, "install"), false);
    assert.deepEqual(readdirSync(dir), []);
  });

  it("consume marks one entry for one machine, on disk when it resolves", async (t) => {
    const file = join(tempDir(t), "once.json");
    const state = await OnceState.open(file);
    await state.consume(A, "install");
    assert.equal(state.consumed(A, "install"), true);
    assert.equal(state.consumed(A, "other"), false, "only that entry");
    assert.equal(state.consumed(B, "install"), false, "only that machine");
    assert.deepEqual(JSON.parse(readFileSync(file, "utf8")), { [A]: ["install"] });
    // Consuming again changes nothing and still resolves.
    await state.consume(A, "install");
    assert.deepEqual(JSON.parse(readFileSync(file, "utf8")), { [A]: ["install"] });
  });

  it("reset lets one machine boot its one-shot entries again, and leaves the others", async (t) => {
    const file = join(tempDir(t), "once.json");
    const state = await OnceState.open(file);
    await state.consume(A, "install");
    await state.consume(A, "firmware");
    await state.consume(B, "install");
    await state.reset(A);
    assert.equal(state.consumed(A, "install"), false);
    assert.equal(state.consumed(A, "firmware"), false);
    assert.equal(state.consumed(B, "install"), true);
    assert.deepEqual(JSON.parse(readFileSync(file, "utf8")), { [B]: ["install"] });
  });

  it("what was consumed (and reset) survives closing and reopening the file", async (t) => {
    const file = join(tempDir(t), "once.json");
    const first = await OnceState.open(file);
    await first.consume(A, "install");
    await first.consume(A, "firmware");
    await first.consume(B, "install");
    await first.reset(B);
    const again = await OnceState.open(file);
    assert.equal(again.consumed(A, "install"), true);
    assert.equal(again.consumed(A, "firmware"), true);
    assert.equal(again.consumed(B, "install"), false);
  });

  it("writes issued together all land, in order (no lost update)", async (t) => {
    const file = join(tempDir(t), "once.json");
    const state = await OnceState.open(file);
    const macs = Array.from({ length: 20 }, (_, i) => `52:54:00:00:01:${i.toString(16)}`);
    await Promise.all(macs.map((m) => state.consume(m, "install")));
    await state.reset(macs[0]);
    const again = await OnceState.open(file);
    assert.equal(again.consumed(macs[0], "install"), false);
    for (const m of macs.slice(1)) assert.equal(again.consumed(m, "install"), true, m);
  });

  it("an unreadable state file is refused with its path and how to reset, not taken as empty", async (t) => {
    const dir = tempDir(t);
    const garbled = join(dir, "once.json");
    writeFileSync(garbled, '{"52:54:00:00:00:0a": ["install"');
    await assert.rejects(OnceState.open(garbled), (err: Error) => {
      assert.match(err.message, /One-shot state .*once\.json is unreadable/);
      assert.match(err.message, /remove it to reset/);
      assert.ok(err.cause instanceof SyntaxError, String(err.cause));
      return true;
    });
    // Not a file at all (a folder where the file should be): refused too, not ENOENT.
    const folder = join(dir, "folder.json");
    mkdirSync(folder);
    await assert.rejects(OnceState.open(folder), /One-shot state .*folder\.json is unreadable/);
    // The refused file is left as it was.
    assert.equal(readFileSync(garbled, "utf8"), '{"52:54:00:00:00:0a": ["install"');
  });
});
