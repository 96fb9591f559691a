import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EventLog } from "./events.ts";
import {
  baseFromHost,
  MAX_HOSTNAME,
  MAX_LABEL_VALUE,
  MAX_LABELS,
  requestFacts,
} from "./request-facts.ts";

describe("facts from a plan request", () => {
  it("keeps what iPXE reports, bounded", () => {
    const q = new URLSearchParams({
      mac: "52-54-00-12-34-56",
      uuid: "8C3F1A2B-0000-4000-8000-00AABBCCDDEE",
      buildarch: "x86_64",
      platform: "efi",
      hostname: "h".repeat(7000),
      rack: "r".repeat(7000),
    });
    for (let i = 0; i < 100; i++) q.set(`label${i}`, "v");
    const f = requestFacts(q, undefined);
    assert.equal(f.mac, "52:54:00:12:34:56");
    assert.equal(f.uuid, "8c3f1a2b-0000-4000-8000-00aabbccddee");
    assert.equal(f.hostname?.length, MAX_HOSTNAME);
    assert.equal(f.labels.rack.length, MAX_LABEL_VALUE);
    assert.equal(Object.keys(f.labels).length, MAX_LABELS);
    assert.ok(f.arch.includes("uefi"));
  });

  it("drops what is not a fact: bad UUIDs, control characters, prototype keys", () => {
    const q = new URLSearchParams("uuid=not-a-uuid&hostname=a%0Ab%00c&__proto__=x&mac=zz");
    const f = requestFacts(q, "52:54:00:00:00:09");
    assert.equal(f.uuid, undefined);
    assert.equal(f.hostname, "abc");
    assert.equal(f.mac, "52:54:00:00:00:09", "the MAC DHCP saw at the address");
    assert.equal(Object.getPrototypeOf(f.labels), null);
    assert.equal(f.labels.__proto__, "x");
  });

  it("takes a Host header only when it is a host[:port]", () => {
    assert.equal(baseFromHost("10.0.0.1:8080"), "http://10.0.0.1:8080");
    assert.equal(baseFromHost("[fe80::1]:8080"), "http://[fe80::1]:8080");
    assert.equal(baseFromHost("boot.lab"), "http://boot.lab");
    for (const bad of ["[", "a b", "x@y", "a:b:c", "", undefined, "h".repeat(400)]) {
      assert.equal(baseFromHost(bad), null, String(bad));
    }
  });
});

describe("the event log's bounds", () => {
  it("forgets the least recently seen machine past its cap and cuts long text", () => {
    const log = new EventLog(100, 3);
    for (let i = 0; i < 5; i++) {
      log.record(
        {
          stage: "http-plan",
          mac: `52:54:00:00:00:0${i}`,
          ip: `10.0.0.${i}`,
          detail: "d".repeat(5000),
        },
        { hostname: "h".repeat(1000) },
      );
    }
    log.record({ stage: "http-kernel", mac: "52:54:00:00:00:02", ip: "10.0.0.2" });
    log.record({ stage: "http-plan", mac: "52:54:00:00:00:05", ip: "10.0.0.5" });
    assert.deepEqual(
      log
        .machines()
        .map((m) => m.mac)
        .sort(),
      ["52:54:00:00:00:02", "52:54:00:00:00:04", "52:54:00:00:00:05"],
    );
    assert.equal(log.macForIp("10.0.0.0"), undefined, "a forgotten machine's address too");
    assert.equal(log.macForIp("10.0.0.2"), "52:54:00:00:00:02");
    assert.ok((log.machine("52:54:00:00:00:04")?.hostname?.length ?? 0) <= 253);
    assert.ok(log.events().every((e) => (e.detail?.length ?? 0) <= 1024));
  });
});
