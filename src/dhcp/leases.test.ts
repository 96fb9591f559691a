import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { LeaseDb } from "./leases.ts";
import type { PoolConfig } from "./leases.ts";

const POOL: PoolConfig = {
  rangeStart: "10.0.0.10",
  rangeEnd: "10.0.0.12",
  netmask: "255.255.255.0",
  reservations: [{ mac: "52:54:00:00:00:99", ip: "10.0.0.50", hostname: "pinned" }],
  leaseSeconds: 600,
};
const A = "52:54:00:00:00:0a";
const B = "52:54:00:00:00:0b";
const C = "52:54:00:00:00:0c";
const D = "52:54:00:00:00:0d";

it("allocates, reserves, persists across a restart and never gives one address to two machines", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "leases-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "leases.json");
  let now = 1_000_000;
  const db = await LeaseDb.open(POOL, file, () => now);
  assert.equal(db.offer(A), "10.0.0.10");
  assert.equal(db.offer(B), "10.0.0.11");
  assert.equal(db.offer(A), "10.0.0.10", "the same client is offered the same address again");
  assert.equal(db.offer("52:54:00:00:00:99"), "10.0.0.50", "reservation");
  assert.ok(await db.commit(A, "10.0.0.10", "a"));
  assert.equal(await db.commit(C, "10.0.0.10"), null, "someone else's leased address is refused");
  assert.equal(
    await db.commit(C, "10.0.0.11"),
    null,
    "an address offered to another client is held",
  );
  assert.equal(await db.commit(C, "10.0.0.50"), null, "a reserved address is not for others");
  assert.equal(await db.commit(C, "10.9.9.9"), null, "outside the range");
  assert.match(readFileSync(file, "utf8"), /10\.0\.0\.10/);

  // Restart: the lease survives, so the next machine does not get 10.0.0.10.
  const again = await LeaseDb.open(POOL, file, () => now);
  assert.equal(again.offer(D), "10.0.0.11");
  assert.equal(again.offer(A), "10.0.0.10");
  assert.equal(again.offer(C), "10.0.0.12");
  assert.equal(again.offer("52:54:00:00:00:ee"), null, "pool exhausted");

  // DECLINE keeps the address out of the pool; RELEASE frees one.
  await again.decline(C, "10.0.0.12");
  now += 120_000; // offers expired
  assert.equal(again.offer("52:54:00:00:00:ee"), "10.0.0.11");
  assert.ok(await again.release(A, "10.0.0.10"));
  assert.equal(again.offer("52:54:00:00:00:ff"), "10.0.0.10");
  now += 700_000; // decline hold and leases over
  assert.equal(again.leases().length, 0);
});

it("explains an unreadable lease file", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "leases-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "leases.json");
  (await import("node:fs")).writeFileSync(file, "{not json");
  await assert.rejects(LeaseDb.open(POOL, file), /unreadable.*move it away/);
});

it("a REQUEST alone does not move a MAC's valid lease to another address; who holds what is known", async () => {
  let now = 1_000_000;
  const db = await LeaseDb.open(POOL, null, () => now);
  assert.equal(db.offer(A), "10.0.0.10");
  assert.ok(await db.commit(A, "10.0.0.10"));
  assert.equal(db.holderOf("10.0.0.10"), A);
  assert.equal(db.addressOf(A), "10.0.0.10");
  // A spoofed REQUEST with A's MAC for a free address is refused (NAK): A keeps its address.
  assert.equal(await db.commit(A, "10.0.0.11"), null);
  assert.equal(db.addressOf(A), "10.0.0.10");
  assert.equal(db.holderOf("10.0.0.11"), undefined);
  // Offers do not count as holding; an expired lease holds nothing and may move.
  assert.equal(db.offer(B), "10.0.0.11");
  assert.equal(db.holderOf("10.0.0.11"), undefined);
  now += 601_000;
  assert.equal(db.addressOf(A), undefined);
  assert.ok(await db.commit(A, "10.0.0.12"));
});
