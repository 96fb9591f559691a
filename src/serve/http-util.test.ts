import assert from "node:assert/strict";
import { it } from "node:test";
import { FailureLimiter } from "./http-util.ts";

it("refuses an address after five wrong tokens in a minute, until the minute has passed", () => {
  let now = 1_000_000;
  const limiter = new FailureLimiter({ now: () => now });
  for (let i = 0; i < 4; i++) limiter.failed("10.0.0.9");
  assert.equal(limiter.blockedFor("10.0.0.9"), 0, "four failures are allowed");
  now += 10_000;
  limiter.failed("10.0.0.9");
  assert.equal(limiter.blockedFor("10.0.0.9"), 50_000);
  assert.equal(limiter.blockedFor("10.0.0.10"), 0, "other addresses are not affected");
  now += 49_999;
  assert.equal(limiter.blockedFor("10.0.0.9"), 1);
  now += 1;
  assert.equal(limiter.blockedFor("10.0.0.9"), 0);
  limiter.failed("10.0.0.9");
  assert.equal(limiter.blockedFor("10.0.0.9"), 0, "a new window starts at one failure");
});

it("tracks a bounded number of addresses", () => {
  const limiter = new FailureLimiter({ limit: 1, maxAddresses: 3 });
  for (const ip of ["a", "b", "c", "d"]) limiter.failed(ip);
  assert.equal(limiter.blockedFor("a"), 0, "the oldest was dropped");
  for (const ip of ["b", "c", "d"]) assert.ok(limiter.blockedFor(ip) > 0, ip);
});
