// The machine API (/api/v1) in process, every request and response checked against the
// OpenAPI document the server serves (Ajv, JSON Schema 2020-12): records made, read, changed
// and removed; If-Match between two writers; the write token on every write; field-level
// errors; a next boot used once by a plan and the CLI (`inetboot next`, `machines`) over HTTP;
// and the registry file surviving kill -9 in the middle of writes.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { MachineRegistry } from "../src/serve/machine-registry.ts";
import { inetboot, inetbootOk, REPO, tempDir, writeImage } from "./helpers.ts";

const TOKEN = "api-test-write-token";
const MAC = "52:54:00:12:34:f1";
const DASHED = MAC.replace(/:/g, "-");

type Doc = {
  paths: Record<
    string,
    Record<
      string,
      {
        requestBody?: unknown;
        responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
      }
    >
  >;
  components: unknown;
};

async function server(
  t: TestContext,
  write = true,
): Promise<{ base: string; srv: BootServer; dir: string }> {
  const dir = tempDir(t);
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(1000, 1));
  const config = parseConfig(
    `http: { port: 0, address: 127.0.0.1 }
state: ${dir}/state
ui: { write: ${write}, token: ${TOKEN} }
entries:
  a: { kernel: ${dir}/vmlinuz, cmdline: entry-a }
  b: { kernel: ${dir}/vmlinuz, cmdline: entry-b }
machines:
  - { match: { mac: "${MAC}" }, boot: a }
`,
    join(dir, "serve.yaml"),
  );
  const srv = new BootServer(config);
  await srv.start();
  t.after(() => srv.stop());
  return { base: `http://127.0.0.1:${srv.httpPort}`, srv, dir };
}

/** Calls the API and checks the request body and the response against the OpenAPI document. */
function client(base: string, doc: Doc) {
  const ajv = new Ajv2020({ strict: false });
  ajv.addSchema({ $id: "doc", components: doc.components });
  const schemaAt = (s: unknown): unknown =>
    JSON.parse(JSON.stringify(s).replace(/"#\/components/g, '"doc#/components'));
  return async (
    method: string,
    path: string,
    options: { body?: unknown; token?: string | null; ifMatch?: string } = {},
  ): Promise<{ status: number; json: unknown; etag: string | null }> => {
    const template = path
      .replace(/\/machines\/[^/]+/, "/machines/{mac}")
      .replace(/\/images\/[^/]+/, "/images/{entry}");
    const op = doc.paths[`/api/v1${template}`]?.[method.toLowerCase()];
    assert.ok(op, `${method} ${template} is in the OpenAPI document`);
    const reqSchema = (
      op.requestBody as { content?: Record<string, { schema: unknown }> } | undefined
    )?.content?.["application/json"]?.schema;
    const res = await fetch(`${base}/api/v1${path}`, {
      method,
      headers: {
        ...(options.token !== null ? { Authorization: `Bearer ${options.token ?? TOKEN}` } : {}),
        ...(options.ifMatch ? { "If-Match": options.ifMatch } : {}),
        ...(options.body !== undefined ? { "Content-Type": "application/json" } : {}),
      },
      body:
        options.body === undefined
          ? undefined
          : typeof options.body === "string"
            ? options.body
            : JSON.stringify(options.body),
    });
    const text = await res.text();
    const json: unknown = text ? JSON.parse(text) : null;
    const declared = op.responses[String(res.status)];
    assert.ok(declared, `${method} ${template} ${res.status} is declared (${text})`);
    const schema = declared.content?.["application/json"]?.schema;
    if (schema) {
      const valid = ajv.validate(schemaAt(schema) as object, json);
      assert.ok(valid, `${method} ${path} ${res.status}: ${ajv.errorsText()} in ${text}`);
    }
    // A body the server took must be one the document allows.
    if (res.ok && reqSchema && options.body !== undefined) {
      const valid = ajv.validate(schemaAt(reqSchema) as object, options.body);
      assert.ok(
        valid,
        `${method} ${path}: the server took a body the document refuses: ${ajv.errorsText()}`,
      );
    }
    return { status: res.status, json, etag: res.headers.get("etag") };
  };
}

describe("the machine API (/api/v1)", () => {
  it("records: make, read, patch, replace, remove; field errors; the document covers every route", async (t) => {
    const { base, srv } = await server(t);
    const doc = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as Doc;
    // Every /api/v1 route the server answers is in the document, and nothing else is.
    const served = srv.routes.routes
      .filter((r) => r.label === "/api/v1" && !r.pattern.source.includes("openapi"))
      .map((r) => {
        const raw = r.pattern.source.replace(/^\^|\$$/g, "").replace(/\\\//g, "/");
        const path = raw.replace("([^/]+)", raw.includes("images") ? "{entry}" : "{mac}");
        return `${r.method} ${path}`;
      })
      .sort();
    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) =>
        Object.keys(ops)
          .filter((k) => k !== "parameters")
          .map((m) => `${m.toUpperCase()} ${path}`),
      )
      .sort();
    assert.equal(served.length, 11);
    assert.deepEqual(served, documented);
    const api = client(base, doc);
    assert.deepEqual((await api("GET", "/machines")).json, { machines: [] });
    const made = await api("PUT", `/machines/${DASHED}`, {
      body: { hostname: "lab-1", labels: { rack: "r7" }, notes: "by the window" },
    });
    assert.equal(made.status, 201);
    assert.equal(made.etag, '"1"');
    assert.deepEqual((made.json as { mac: string }).mac, MAC);
    const got = await api("GET", `/machines/${MAC}`);
    assert.equal((got.json as { hostname: string }).hostname, "lab-1");
    const patched = await api("PATCH", `/machines/${DASHED}`, {
      body: { entry: "b", notes: null },
      ifMatch: '"1"',
    });
    assert.equal(patched.status, 200);
    assert.deepEqual(
      { ...(patched.json as object), updated: "" },
      { mac: MAC, hostname: "lab-1", labels: { rack: "r7" }, entry: "b", version: 2, updated: "" },
    );
    const replaced = await api("PUT", `/machines/${DASHED}`, { body: { entry: "a" } });
    assert.deepEqual(Object.keys(replaced.json as object).sort(), [
      "entry",
      "mac",
      "updated",
      "version",
    ]);
    // Errors name the field.
    for (const [body, field] of [
      [{ entry: "nowhere" }, "entry"],
      [{ hostname: "not a host!" }, "hostname"],
      [{ colour: "red" }, "colour"],
      [{ labels: { "bad key": "x" } }, "labels.bad key"],
      [[1, 2], ""],
    ] as const) {
      const r = await api("PATCH", `/machines/${DASHED}`, { body });
      assert.equal(r.status, 400);
      assert.equal((r.json as { field: string }).field, field);
    }
    const notJson = await api("PUT", `/machines/${DASHED}`, { body: "{not json" });
    assert.equal(notJson.status, 400);
    assert.equal((await api("GET", "/machines/not-a-mac")).status, 400);
    assert.equal((await api("PATCH", "/machines/52:54:00:00:00:99", { body: {} })).status, 404);
    assert.equal(
      (await api("PUT", `/machines/${DASHED}`, { body: "x".repeat(70_000) })).status,
      413,
    );
    // Another site's page can send a form or text/plain, never JSON: those are refused.
    const plain = await fetch(`${base}/api/v1/machines/${DASHED}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "text/plain" },
      body: JSON.stringify({ hostname: "x" }),
    });
    assert.equal(plain.status, 415);
    // The write token as a Basic password (what a browser resends by itself) writes nothing.
    const basic = await fetch(`${base}/api/v1/machines/${DASHED}`, {
      method: "PATCH",
      headers: {
        Authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString("base64")}`,
        "Content-Type": "application/json",
      },
      body: "{}",
    });
    assert.equal(basic.status, 401);
    assert.equal(basic.headers.get("www-authenticate"), 'Bearer realm="inetboot"');
    const other = "/machines/52:54:00:00:00:77";
    assert.equal(
      (await api("PUT", other, { body: {}, ifMatch: "*" })).status,
      412,
      "If-Match: * needs a record",
    );
    assert.equal((await api("DELETE", `${other}/next`)).status, 404);
    assert.equal((await api("PUT", `${other}/next`, { body: { entry: "b" } })).status, 201);
    assert.equal((await api("DELETE", `/machines/${DASHED}`)).status, 204);
    assert.equal((await api("GET", `/machines/${DASHED}`)).status, 404);
    assert.equal((await api("POST", "/reload")).status, 409, "no file to reload in process");
    // Every change is an event on the machine's timeline.
    const events = (await (await fetch(`${base}/api/events?mac=${DASHED}`)).json()) as {
      stage: string;
      detail?: string;
    }[];
    assert.deepEqual(
      events.filter((e) => e.stage === "api-machine").map((e) => e.detail?.replace(/ from .*/, "")),
      ["record made", "record changed", "record replaced", "record removed"],
      "events of this machine only",
    );
  });

  it("If-Match: of two writers holding one ETag, the second is refused; every write needs the token", async (t) => {
    const { base } = await server(t);
    const doc = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as Doc;
    const api = client(base, doc);
    const { etag } = await api("PUT", `/machines/${DASHED}`, { body: { hostname: "one" } });
    const [x, y] = await Promise.all([
      api("PATCH", `/machines/${DASHED}`, { body: { hostname: "two" }, ifMatch: etag! }),
      api("PATCH", `/machines/${DASHED}`, { body: { hostname: "three" }, ifMatch: etag! }),
    ]);
    assert.deepEqual([x.status, y.status].sort(), [200, 412]);
    const loser = x.status === 412 ? x : y;
    assert.match((loser.json as { error: string }).error, /changed since it was read/);
    const writes = [
      ["PUT", `/machines/${DASHED}`, {}],
      ["PATCH", `/machines/${DASHED}`, {}],
      ["DELETE", `/machines/${DASHED}`, undefined],
      ["PUT", `/machines/${DASHED}/next`, { entry: "b" }],
      ["DELETE", `/machines/${DASHED}/next`, undefined],
      ["POST", `/machines/${DASHED}/reset-disk`, { entry: "a" }],
      ["POST", "/reload", undefined],
    ] as const;
    for (const [method, path, body] of writes) {
      const r = await api(method, path, { body, token: null });
      assert.equal(r.status, 401, `${method} ${path} without a token`);
    }
    // Wrong tokens: refused, and past five a minute the address is held off.
    const wrong = [];
    for (const [method, path, body] of [...writes, ...writes].slice(0, 7)) {
      wrong.push((await api(method, path, { body, token: "wrong-token-xx" })).status);
    }
    assert.deepEqual(wrong, [401, 401, 401, 401, 401, 429, 429]);
  });

  it("an image entry is pinned to a release of its store and unpinned; a digest not in the store is refused", async (t) => {
    const dir = tempDir(t);
    const disk = join(dir, "disk.img");
    writeImage(disk, [Buffer.alloc(1 << 20, 7)]);
    const store = join(dir, "store");
    await inetbootOk(["keygen", "--out", join(dir, "k")]);
    await inetbootOk(["pack", disk, "--store", store, "--name", "tiny", "--key", join(dir, "k")]);
    const listed = JSON.parse((await inetbootOk(["ls", "--store", store, "--json"])).stdout) as {
      digest: string;
    }[];
    const digest = listed[0].digest;
    assert.match(digest, /^[0-9a-f]{64}$/);
    const config = parseConfig(
      `http: { port: 0, address: 127.0.0.1 }
state: ${dir}/state
ui: { write: true, token: ${TOKEN} }
entries:
  tiny: { image: { name: tiny, store: ${store}, trust: [${join(dir, "k.pub")}] }, kernel: ${disk} }
`,
      join(dir, "serve.yaml"),
    );
    const srv = new BootServer(config);
    await srv.start();
    t.after(() => srv.stop());
    const base = `http://127.0.0.1:${srv.httpPort}`;
    const doc = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as Doc;
    const api = client(base, doc);
    const pinned = await api("PUT", "/images/tiny/pin", { body: { release: digest } });
    assert.deepEqual(pinned.json, { entry: "tiny", pinned: digest });
    assert.equal(srv.images?.pin("tiny"), digest);
    const unknown = await api("PUT", "/images/tiny/pin", { body: { release: "0".repeat(64) } });
    assert.equal(unknown.status, 400);
    assert.equal(
      (await api("PUT", "/images/nothing/pin", { body: { release: digest } })).status,
      404,
    );
    assert.deepEqual((await api("DELETE", "/images/tiny/pin")).json, {
      entry: "tiny",
      pinned: null,
    });
    assert.equal(srv.images?.pin("tiny"), null);
  });

  it("writes are refused when the server has write actions off", async (t) => {
    const { base } = await server(t, false);
    const doc = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as Doc;
    const r = await client(base, doc)("PUT", `/machines/${DASHED}`, { body: {} });
    assert.equal(r.status, 403);
  });

  it("inetboot next MAC ENTRY over HTTP: the next boot gets the entry once, then the rules again", async (t) => {
    const { base, dir } = await server(t);
    const plan = async (): Promise<string> =>
      (await fetch(`${base}/ipxe/boot?mac=${DASHED}`)).text();
    assert.match(await plan(), /entry-a/);
    const env = { INETBOOT_TOKEN: TOKEN };
    const next = await inetboot(["next", MAC, "b", "--server", base], env);
    assert.equal(next.code, 0, next.stderr);
    assert.match(next.stdout, /next boot b, then its rules/);
    assert.match(await plan(), /entry-b/);
    assert.match(await plan(), /entry-a/, "used once");
    const set = await inetboot(
      ["machines", "set", MAC, "--hostname", "lab-9", "--label", "rack=r1", "--server", base],
      env,
    );
    assert.equal(set.code, 0, set.stderr);
    const ls = await inetboot(["machines", "ls", "--server", base, "--json"], env);
    assert.deepEqual(
      (JSON.parse(ls.stdout) as { hostname: string; labels: object }[]).map((m) => [
        m.hostname,
        m.labels,
      ]),
      [["lab-9", { rack: "r1" }]],
    );
    const noToken = await inetboot(["next", MAC, "b", "--server", base]);
    assert.notEqual(noToken.code, 0);
    assert.match(noToken.stderr, /401 .*write token.*INETBOOT_TOKEN/);
    const gone = await inetboot(["machines", "ls", "--server", "http://127.0.0.1:1"], env);
    assert.match(
      gone.stderr,
      /cannot reach http:\/\/127\.0\.0\.1:1 .*is inetboot serve running there/,
    );
    // The registry is a file in the state folder.
    const file = JSON.parse(readFileSync(join(dir, "state", "machines.json"), "utf8")) as {
      machines: unknown[];
    };
    assert.equal(file.machines.length, 1);
  });

  it("the registry file survives kill -9 in the middle of writes: the old state or the new, never half", async (t) => {
    const dir = tempDir(t);
    const path = join(dir, "machines.json");
    const script = `
      import { MachineRegistry } from ${JSON.stringify(join(REPO, "src/serve/machine-registry.ts"))};
      const r = await MachineRegistry.open(${JSON.stringify(path)});
      process.stdout.write("open\\n");
      for (let i = 0; ; i++) {
        await r.update("52:54:00:00:00:" + String(i % 50).padStart(2, "0"), undefined, () => ({ notes: "n".repeat(2000) + i, labels: { i: String(i) } }));
      }
    `;
    for (let round = 0; round < 5; round++) {
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 300));
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      const reopened = await MachineRegistry.open(path);
      assert.ok(reopened.list().length > 0, `round ${round}: the file holds the records written`);
    }
  });
});

describe("the dashboard's registry forms", () => {
  it("a machine's page adopts it with its next boot; stale and wrong-token forms are refused", async (t) => {
    const { base } = await server(t);
    const post = (path: string, fields: Record<string, string>): Promise<Response> =>
      fetch(`${base}${path}`, {
        method: "POST",
        body: new URLSearchParams(fields),
        redirect: "manual",
      });
    // Seen (it asked for a plan) but not registered: the machines page offers to adopt it.
    await (await fetch(`${base}/ipxe/boot?mac=${DASHED}`)).text();
    const adopt = new RegExp(`href="/ui/machines/${encodeURIComponent(MAC)}#registry">adopt<`);
    assert.match(await (await fetch(`${base}/ui/machines`)).text(), adopt);
    const page = await (await fetch(`${base}/ui/machines/${DASHED}`)).text();
    assert.match(page, /Not in the registry: the rules choose for it/);
    assert.match(page, /Adopt this machine/);
    const form = {
      version: "0",
      hostname: "lab-4",
      labels: "rack=r2, row=1",
      entry: "",
      next: "b",
      notes: "",
      token: TOKEN,
    };
    const adopted = await post(`/ui/machines/${DASHED}/registry`, form);
    assert.equal(adopted.status, 303);
    const record = (await (await fetch(`${base}/api/v1/machines/${DASHED}`)).json()) as Record<
      string,
      unknown
    >;
    assert.deepEqual(
      { ...record, updated: "" },
      {
        mac: MAC,
        hostname: "lab-4",
        labels: { rack: "r2", row: "1" },
        next: "b",
        version: 1,
        updated: "",
      },
    );
    const plan = async (): Promise<string> =>
      (await fetch(`${base}/ipxe/boot?mac=${DASHED}`)).text();
    assert.match(await plan(), /entry-b/);
    assert.match(await plan(), /entry-a/);
    assert.doesNotMatch(await (await fetch(`${base}/ui/machines`)).text(), adopt);
    // The form still says version 0 (the page was loaded before): refused, nothing lost.
    const stale = await post(`/ui/machines/${DASHED}/registry`, { ...form, hostname: "other" });
    assert.equal(stale.status, 409);
    assert.match(await stale.text(), /Not saved\. .*in the registry already/);
    const older = await post(`/ui/machines/${DASHED}/registry`, {
      ...form,
      version: "1",
      hostname: "x",
    });
    assert.equal(
      older.status,
      412,
      "version 1 is not the record's version any more (the plan used the next boot)",
    );
    const wrong = await post(`/ui/machines/${DASHED}/registry`, {
      ...form,
      version: "2",
      token: "wrong-token-xx",
    });
    assert.equal(wrong.status, 403);
    const bad = await post(`/ui/machines/${DASHED}/registry`, {
      ...form,
      version: "2",
      next: "nowhere",
    });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /Not saved\. next: expected an entry of the configuration/);
    // A machine not seen yet, from the machines page.
    assert.match(await (await fetch(`${base}/ui/machines`)).text(), /Add a machine/);
    const added = await post("/ui/registry", { ...form, mac: "52:54:00:00:00:aa", next: "" });
    assert.equal(added.status, 303);
    assert.equal(added.headers.get("location"), "/ui/machines/52%3A54%3A00%3A00%3A00%3Aaa");
  });
});
