import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RetriesExhaustedError, RetryableError, withBackoff } from "./retry.ts";

describe("withBackoff", () => {
  it("returns the first success without waiting", async () => {
    let calls = 0;
    const started = performance.now();
    const got = await withBackoff(
      () => {
        calls++;
        return Promise.resolve("ok");
      },
      { attempts: 3, backoffMs: 1000 },
    );
    assert.equal(got, "ok");
    assert.equal(calls, 1);
    assert.ok(performance.now() - started < 500);
  });

  it("retries failures until one succeeds", async () => {
    let calls = 0;
    const got = await withBackoff(
      () => (++calls < 3 ? Promise.reject(new RetryableError("HTTP 503")) : Promise.resolve(calls)),
      { attempts: 4, backoffMs: 1 },
    );
    assert.equal(got, 3);
  });

  it("gives up after `attempts`, naming the attempts and the last problem", async () => {
    let calls = 0;
    await assert.rejects(
      withBackoff(() => Promise.reject(new RetryableError(`HTTP 50${++calls}`)), {
        attempts: 3,
        backoffMs: 1,
      }),
      (err: Error) => {
        assert.ok(err instanceof RetriesExhaustedError);
        assert.equal(err.message, "failed after 3 attempts: HTTP 503");
        assert.equal(err.problem, "HTTP 503");
        return true;
      },
    );
    assert.equal(calls, 3);
  });

  it("describes other errors by code or name and message", async () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), {
      code: "ECONNREFUSED",
    });
    await assert.rejects(
      withBackoff(() => Promise.reject(refused), { attempts: 1, backoffMs: 1 }),
      { problem: "ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9" },
    );
    await assert.rejects(
      withBackoff(() => Promise.reject(new TypeError("bad")), { attempts: 1, backoffMs: 1 }),
      { problem: "TypeError: bad" },
    );
    await assert.rejects(
      withBackoff(() => Promise.reject(new Error("x", { cause: 1 })), {
        attempts: 1,
        backoffMs: 1,
      }),
      { problem: "Error: x" },
    );
  });

  it("rethrows at once what isFinal says cannot mend itself", async () => {
    let calls = 0;
    const fatal = new Error("too large");
    await assert.rejects(
      withBackoff(
        () => {
          calls++;
          return Promise.reject(fatal);
        },
        { attempts: 5, backoffMs: 1, isFinal: (err) => err === fatal },
      ),
      (err) => err === fatal,
    );
    assert.equal(calls, 1);
  });

  it("waits backoffMs, then twice as long each time, scaled by a jitter of 0.75 to 1.25", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const settle = async (): Promise<void> => {
      for (let i = 0; i < 10; i++) await Promise.resolve();
    };
    for (const [random, factor] of [
      [0.5, 1],
      [0, 0.75],
      [0.999999, 1.25],
    ]) {
      t.mock.method(Math, "random", () => random);
      let calls = 0;
      const run = withBackoff(
        () => {
          calls++;
          return Promise.reject(new RetryableError("again"));
        },
        { attempts: 4, backoffMs: 100 },
      ).catch((err: unknown) => err);
      for (const base of [100, 200, 400]) {
        const wait = Math.ceil(base * factor);
        await settle();
        const before = calls;
        t.mock.timers.tick(wait - 1);
        await settle();
        assert.equal(calls, before, `jitter ${factor}: not retried after ${wait - 1} ms`);
        t.mock.timers.tick(1);
        await settle();
        assert.equal(calls, before + 1, `jitter ${factor}: retried after ${wait} ms`);
      }
      assert.ok((await run) instanceof RetriesExhaustedError);
      assert.equal(calls, 4);
    }
  });
});
