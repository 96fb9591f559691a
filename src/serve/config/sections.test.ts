// The server sections of serve.yaml (state, nbd, cache, ui): here, the cache's switches.
import assert from "node:assert/strict";
import { it } from "node:test";
import { ConfigError, fakeHost, parseConfig } from "../config.ts";

const host = fakeHost({});

it("cache.unpacked: on by default, false turns it off, anything else is refused with its line", () => {
  assert.equal(parseConfig(null, "(built-in defaults)", host).cacheUnpacked, true);
  assert.equal(
    parseConfig("cache: { unpacked: false }\n", "serve.yaml", host).cacheUnpacked,
    false,
  );
  assert.throws(
    () => parseConfig("cache: { unpacked: 1 }\n", "serve.yaml", host),
    (err: unknown) =>
      err instanceof ConfigError && /serve\.yaml:1: cache\.unpacked: expected/.test(err.message),
  );
});
