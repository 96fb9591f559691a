import assert from "node:assert/strict";
import { it } from "node:test";
import { buildProgram } from "./program.ts";

it("program: each command loads only its own group, and the groups list every command", async () => {
  const all = (await buildProgram()).commands.map((c) => c.name());
  assert.ok(all.includes("pack") && all.includes("serve") && all.includes("machines"));
  for (const name of all) {
    const own = (await buildProgram(name)).commands.map((c) => c.name());
    assert.ok(own.includes(name), `${name} is in the group loaded for it: ${own.join(", ")}`);
    assert.ok(own.length < all.length, `${name} loads one group, not all`);
  }
  // An unknown word (or none) loads everything, so help and errors name every command.
  assert.deepEqual(
    (await buildProgram("nonsense")).commands.map((c) => c.name()),
    all,
  );
});
