// The boot server's HTTP routes under thousands of random requests: paths built from the real
// routes with random segments (escapes, `..`, prototype names, unicode), random query strings
// (MACs in every spelling, huge and repeated values), random headers (Host, Range, If-Range,
// Authorization, Accept) and methods. Never a 5xx, never a crash or an unhandled rejection, and
// a machine still gets its plan afterwards.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { it } from "node:test";
import fc from "fast-check";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { inetbootOk, tempDir, writeImage } from "./helpers.ts";

const PREFIXES = [
  "/",
  "/boot.ipxe",
  "/ipxe/boot",
  "/ipxe/entry/",
  "/ipxe/entry/hello",
  "/files/",
  "/files/hello/kernel",
  "/files/hello/initrd/",
  "/files/img/initrd/0",
  "/iso/",
  "/firmware/",
  "/api/",
  "/api/events",
  "/api/machines",
  "/api/images",
  "/api/images/img/profile",
  "/api/config",
  "/api/events/stream",
  "/ui/",
  "/ui/machines/",
  "/ui/images/img/pin",
  "/ui/catalog",
  "/metrics",
  "/healthz",
];
const SEGMENTS = [
  "",
  "..",
  "%2e%2e",
  "..%2f",
  "%",
  "%zz",
  "%00",
  "__proto__",
  "constructor",
  "toString",
  "hello",
  "img",
  "52-54-00-12-34-56",
  "0",
  "-1",
  "99999999999999999999",
  "ü🙂",
  "a".repeat(3000),
  "undionly.kpxe",
  "reset-disk",
  "pin",
];
const VALUES = [
  "",
  "52:54:00:12:34:56",
  "52-54-00-12-34-56",
  "525400123456",
  "zz:zz",
  "x".repeat(5000),
  "%",
  "__proto__",
  "[",
  "-1",
  "1e309",
  "NaN",
];
const HOSTS = ["127.0.0.1", "[", "a b", "x@y:1", "[::1]:8080", "h".repeat(500), "", "boot.lab:0"];

interface Req {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

const segment = fc.oneof(fc.constantFrom(...SEGMENTS), fc.string({ maxLength: 12 }));
const query = fc.array(
  fc.tuple(
    fc.constantFrom(
      "mac",
      "uuid",
      "hostname",
      "since",
      "buildarch",
      "platform",
      "rack",
      "part",
      "x",
    ),
    fc.oneof(fc.constantFrom(...VALUES), fc.string({ maxLength: 20 })),
  ),
  { maxLength: 6 },
);
const requestArb: fc.Arbitrary<Req> = fc
  .record({
    method: fc.constantFrom("GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"),
    prefix: fc.constantFrom(...PREFIXES),
    segments: fc.array(segment, { maxLength: 3 }),
    query,
    host: fc.option(fc.constantFrom(...HOSTS), { nil: undefined }),
    range: fc.option(
      fc.constantFrom(
        "bytes=0-10",
        "bytes=-5",
        "bytes=5-1",
        "bytes=0-0,2-3,4-5",
        "bytes=x",
        "items=0-1",
        "bytes=99999999999-",
      ),
      { nil: undefined },
    ),
    ifRange: fc.option(fc.constantFrom('"abc"', "Wed, 21 Oct 2015 07:28:00 GMT", "garbage"), {
      nil: undefined,
    }),
    auth: fc.option(
      fc.constantFrom("Bearer x", "Basic !!!", "Basic " + "A".repeat(2000), "Digest y"),
      { nil: undefined },
    ),
    accept: fc.option(fc.constantFrom("text/html", "*/*", "text/event-stream"), { nil: undefined }),
    body: fc.option(
      fc.constantFrom("token=x&entry=img", "entry=__proto__", "%%%", "a=".repeat(3000)),
      { nil: undefined },
    ),
  })
  .map((r) => {
    const encoded = r.segments.map((s) => (/^[\w.%-]*$/.test(s) ? s : encodeURIComponent(s)));
    const qs = r.query
      .map(([k, v]) => `${k}=${/^[\w.%:[-]*$/.test(v) ? v : encodeURIComponent(v)}`)
      .join("&");
    const headers: Record<string, string> = {};
    if (r.host !== undefined) headers.Host = r.host;
    if (r.range) headers.Range = r.range;
    if (r.ifRange) headers["If-Range"] = r.ifRange;
    if (r.auth) headers.Authorization = r.auth;
    if (r.accept) headers.Accept = r.accept;
    const path = `${r.prefix}${encoded.join("/")}${qs ? `?${qs}` : ""}`;
    return { method: r.method, path, headers, body: r.method === "POST" ? r.body : undefined };
  });

/** Sends a request; resolves with the status (0 when the server closed the connection). */
function send(port: number, r: Req): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      { host: "127.0.0.1", port, method: r.method, path: r.path, headers: r.headers, agent: false },
      (res) => {
        const status = res.statusCode ?? 0;
        if (res.headers["content-type"]?.startsWith("text/event-stream")) {
          res.destroy();
          resolve(status);
          return;
        }
        res.resume();
        res.on("end", () => resolve(status));
        res.on("error", () => resolve(status));
      },
    );
    req.setTimeout(10_000, () => req.destroy());
    req.on("error", () => resolve(0));
    req.end(r.body);
  });
}

it(
  "HTTP routes answer thousands of random requests without a 5xx or a crash",
  { timeout: 300_000 },
  async (t) => {
    const problems: unknown[] = [];
    const onProblem = (err: unknown): void => void problems.push(err);
    process.on("unhandledRejection", onProblem);
    process.on("uncaughtException", onProblem);
    t.after(() => {
      process.off("unhandledRejection", onProblem);
      process.off("uncaughtException", onProblem);
    });
    const dir = tempDir(t);
    const disk = join(dir, "disk.img");
    writeImage(disk, [Buffer.alloc(1 << 20, 7), { zero: 1 << 20 }]);
    await inetbootOk(["keygen", "--out", join(dir, "k")]);
    await inetbootOk([
      "pack",
      disk,
      "--store",
      join(dir, "store"),
      "--name",
      "tiny",
      "--key",
      join(dir, "k"),
    ]);
    writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(4096, 1));
    writeFileSync(join(dir, "initrd"), Buffer.alloc(4096, 2));
    const config = parseConfig(
      `http: { port: 0, address: 127.0.0.1 }
nbd: { port: 0 }
state: ${join(dir, "state")}
ui: { write: true, token: fuzz-token-0123456789 }
entries:
  hello: { kernel: ${join(dir, "vmlinuz")}, initrd: [${join(dir, "initrd")}], cmdline: console=ttyS0 }
  img:
    image: { name: tiny, store: ${join(dir, "store")}, trust: [${join(dir, "k.pub")}] }
    kernel: ${join(dir, "vmlinuz")}
    initrd: [${join(dir, "initrd")}]
machines:
  - { match: { mac: "52:54:00:12:34:56" }, boot: img }
default: menu
`,
      join(dir, "serve.yaml"),
    );
    const srv = new BootServer(config);
    await srv.start();
    t.after(() => srv.stop());
    const statuses = new Map<number, number>();
    const bad: string[] = [];
    const closed: string[] = [];
    const slow: string[] = [];
    await fc.assert(
      fc.asyncProperty(fc.array(requestArb, { minLength: 8, maxLength: 8 }), async (batch) => {
        const got = await Promise.all(
          batch.map(async (r) => {
            const started = Date.now();
            const s = await send(srv.httpPort, r);
            if (Date.now() - started > 2000)
              slow.push(`${Date.now() - started} ms ${r.method} ${r.path.slice(0, 80)}`);
            return s;
          }),
        );
        got.forEach((s, i) => {
          statuses.set(s, (statuses.get(s) ?? 0) + 1);
          if (s === 0) closed.push(`${batch[i].method} ${batch[i].path.slice(0, 80)}`);
          if (s >= 500)
            bad.push(
              `${s} ${batch[i].method} ${batch[i].path.slice(0, 200)} ${JSON.stringify(batch[i].headers).slice(0, 200)}`,
            );
        });
        return true;
      }),
      { numRuns: 750, seed: 14 },
    );
    t.diagnostic(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
    t.diagnostic(`closed without an answer: ${closed.join(" | ")}`);
    t.diagnostic(`slow: ${slow.join(" | ")}`);
    assert.deepEqual(bad.slice(0, 10), [], "5xx answers");
    assert.deepEqual(problems, []);
    const total = [...statuses.values()].reduce((a, b) => a + b, 0);
    assert.equal(total, 6000);
    assert.deepEqual(closed, [], "every request is answered");
    // Still serving machines.
    const plan = await fetch(`http://127.0.0.1:${srv.httpPort}/ipxe/boot?mac=52:54:00:12:34:56`);
    assert.equal(plan.status, 200);
    assert.match(await plan.text(), /nbdroot=/);
  },
);
