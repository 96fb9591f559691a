// One route table decides routing, metrics labels and who needs the read token: every route
// is reached here by a sample path, people's routes ask for the token and machines' never do,
// so a new route cannot slip in unguarded (a route without a sample fails this test). And an
// entry kind added as one file (exit) is served like any other.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { tempDir } from "./helpers.ts";

const READ = "read-token-for-tests";

/** A path for each route, with the method it answers. */
const SAMPLES: [string, string][] = [
  ["GET", "/boot.ipxe"],
  ["GET", "/ipxe/boot?mac=52-54-00-00-00-01"],
  ["GET", "/ipxe/entry/hello"],
  ["GET", "/files/hello/kernel"],
  ["GET", "/iso/nothing/x.iso"],
  ["GET", "/firmware/none.efi"],
  ["GET", "/cloud-init/hello/52-54-00-00-00-01/meta-data"],
  ["GET", "/machine-files/hello/52-54-00-00-00-01/preseed.cfg"],
  ["GET", "/healthz"],
  ["GET", "/"],
  ["GET", "/metrics"],
  ["GET", "/api/events/stream"],
  ["GET", "/api/events"],
  ["GET", "/api/machines"],
  ["GET", "/api/images"],
  ["GET", "/api/images/hello/profile"],
  ["GET", "/api/config"],
  ["GET", "/api/v1/openapi.json"],
  ["GET", "/api/v1/machines"],
  ["GET", "/api/v1/machines/52:54:00:00:00:01"],
  ["PUT", "/api/v1/machines/52:54:00:00:00:01"],
  ["PATCH", "/api/v1/machines/52:54:00:00:00:01"],
  ["DELETE", "/api/v1/machines/52:54:00:00:00:01"],
  ["PUT", "/api/v1/machines/52:54:00:00:00:01/next"],
  ["DELETE", "/api/v1/machines/52:54:00:00:00:01/next"],
  ["POST", "/api/v1/machines/52:54:00:00:00:01/reset-disk"],
  ["PUT", "/api/v1/images/hello/pin"],
  ["DELETE", "/api/v1/images/hello/pin"],
  ["POST", "/api/v1/reload"],
  ["GET", "/ui"],
  ["GET", "/ui/machines"],
  ["GET", "/ui/machines/52:54:00:00:00:01"],
  ["GET", "/ui/catalog"],
  ["GET", "/ui/images"],
  ["GET", "/ui/cache"],
  ["POST", "/ui/images/hello/pin"],
  ["POST", "/ui/machines/52:54:00:00:00:01/reset-disk"],
  ["POST", "/ui/machines/52:54:00:00:00:01/registry"],
  ["POST", "/ui/registry"],
  ["GET", "/ui/other"],
  ["GET", "/api/other"],
];

describe("the route table", () => {
  it("every route has a sample; people's routes need the read token, machines' never", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "k"), "kernel");
    const config = parseConfig(
      `http: { port: 0, address: 127.0.0.1 }
state: ${join(dir, "state")}
ui: { read-token: ${READ} }
entries:
  hello: { kernel: ${join(dir, "k")} }
  away: { exit: { code: 1, message: "not today" } }
machines:
  - { match: { mac: "52:54:00:00:00:02" }, boot: away }
`,
      join(dir, "serve.yaml"),
    );
    const srv = new BootServer(config);
    await srv.start();
    t.after(() => srv.stop());
    const base = `http://127.0.0.1:${srv.httpPort}`;
    const used = new Set<number>();
    for (const [method, path] of SAMPLES) {
      const pathname = path.replace(/\?.*$/, "");
      const i = srv.routes.routes.findIndex((r) => r.method === method && r.pattern.test(pathname));
      assert.ok(i >= 0, `${method} ${path} has a route`);
      used.add(i);
      const route = srv.routes.routes[i];
      const res = await fetch(`${base}${path}`, { method, redirect: "manual" });
      await res.body?.cancel();
      if (route.audience === "people") assert.equal(res.status, 401, `${method} ${path}`);
      else assert.notEqual(res.status, 401, `${method} ${path}`);
      assert.ok(res.status < 500, `${method} ${path}: ${res.status}`);
    }
    const missing = srv.routes.routes.filter((_, i) => !used.has(i)).map((r) => String(r.pattern));
    assert.deepEqual(missing, [], "routes without a sample here");
    // Metrics labels come from the same table and stay bounded.
    assert.equal(srv.routes.label("/files/hello/kernel?x=1"), "/files");
    assert.equal(srv.routes.label("/ui/machines/x"), "/ui");
    assert.equal(srv.routes.label("/no/such/thing"), "other");
    // The exit kind (one file, one registration line): its plan leaves iPXE with its code.
    const plan = await (await fetch(`${base}/ipxe/boot?mac=52-54-00-00-00-02`)).text();
    assert.equal(plan, "#!ipxe\necho inetboot: not today\nexit 1\n");
  });
});
