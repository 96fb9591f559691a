import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ExportTickets, redactedExport } from "./export-tickets.ts";

const MAC = "52:54:00:00:00:01";

function tickets(connected: Set<string>, options: { max?: number; maxPerAddress?: number } = {}) {
  let now = 1_000_000;
  const t = new ExportTickets({
    clientsOf: (name) => (connected.has(name) ? 1 : 0),
    ttlMs: 60_000,
    now: () => now,
    ...options,
  });
  return { t, advance: (ms: number) => (now += ms) };
}

describe("per-boot export tickets", () => {
  it("names carry 96 random bits and the newest is the machine's current one", () => {
    const { t } = tickets(new Set());
    const a = t.issue("img", MAC, "10.0.0.5").ticket;
    const b = t.issue("img", MAC, "10.0.0.5").ticket;
    assert.match(a.name, /^img-52-54-00-00-00-01-[0-9a-f]{24}$/);
    assert.notEqual(a.name, b.name);
    assert.equal(t.current("img", MAC), b);
    assert.ok(!t.isCurrent(a) && t.isCurrent(b));
    assert.equal(t.of("img", MAC).length, 2);
    assert.equal(redactedExport(a.name), `${a.name.slice(0, -20)}…`);
  });

  it("waiting tickets expire after the TTL; connected ones never, and count from their last use", () => {
    const connected = new Set<string>();
    const { t, advance } = tickets(connected);
    const waiting = t.issue("img", MAC, "10.0.0.5").ticket;
    const used = t.issue("img", "52:54:00:00:00:02", "10.0.0.6").ticket;
    connected.add(used.name);
    advance(30_000);
    assert.deepEqual(t.expire(), []);
    advance(31_000);
    assert.deepEqual(
      t.expire().map((x) => x.name),
      [waiting.name],
    );
    assert.equal(t.current("img", MAC), undefined);
    advance(3_600_000);
    assert.deepEqual(t.expire(), [], "a connected ticket stays");
    connected.delete(used.name); // its machine left: the TTL starts from the last time it was seen
    advance(30_000);
    assert.deepEqual(t.expire(), []);
    advance(31_000);
    assert.equal(t.expire()[0]?.name, used.name);
  });

  it("when a machine's newest ticket goes, its newest remaining one becomes current", () => {
    const connected = new Set<string>();
    const { t, advance } = tickets(connected);
    const running = t.issue("img", MAC, "10.0.0.5").ticket;
    connected.add(running.name);
    advance(1000);
    const retry = t.issue("img", MAC, "10.0.0.5").ticket;
    assert.ok(t.isCurrent(retry));
    advance(61_000);
    assert.deepEqual(
      t.expire().map((x) => x.name),
      [retry.name],
    );
    assert.ok(t.isCurrent(running), "the connected one may reconnect after a blip");
  });

  it("one address holds a few waiting tickets, all addresses a bounded number; connected ones never go", () => {
    const connected = new Set<string>();
    const { t } = tickets(connected, { maxPerAddress: 3, max: 10 });
    const first = t.issue("img", MAC, "10.0.0.5").ticket;
    connected.add(first.name);
    const dropped: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = t.issue("img", `52:54:00:00:01:0${i}`, "10.0.0.5");
      dropped.push(...r.dropped.map((x) => x.name));
    }
    assert.equal(t.of("img", MAC).length, 1, "the connected ticket stayed");
    assert.equal(t.size, 4, "one connected and three waiting");
    assert.equal(dropped.length, 2);
    for (let i = 0; i < 50; i++)
      t.issue("img", `52:54:00:00:02:${i.toString(16).padStart(2, "0")}`, `10.1.0.${i}`);
    assert.equal(t.size, 10);
    assert.ok(t.get(first.name), "the connected ticket is never dropped for room");
  });
});
