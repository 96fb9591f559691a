// `inetboot doctor` through the real CLI: files and URLs that are not there, a port another
// program holds, an image store with a signed release (and one signed by a key not trusted),
// and a real `inetboot serve` in a network namespace — seen bound and healthy, then stopped.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CLI, inetboot, inetbootOk, run, tempDir, writeImage } from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";

interface Check {
  name: string;
  outcome: "ok" | "warn" | "fail";
  detail: string;
  fix?: string;
}

function parse(stdout: string): { ok: boolean; checks: Check[] } {
  return JSON.parse(stdout) as { ok: boolean; checks: Check[] };
}

/** Name and outcome of each check, but for the host's own first stages and loaders (packages). */
const outline = (checks: Check[]): [string, string][] =>
  checks
    .filter((c) => !/^(first stage (?!bios$)|loader )/.test(c.name))
    .map((c) => [c.name, c.outcome]);

const byName = (checks: Check[], name: string): Check => {
  const c = checks.find((x) => x.name === name);
  assert.ok(c, `no check named "${name}" in: ${checks.map((x) => x.name).join(", ")}`);
  return c;
};

/** A loopback port nothing listens on (a server was bound there and closed). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Serves `dir` read-only over HTTP (a store as a web server serves it). */
async function serveDir(t: { after(fn: () => unknown): void }, dir: string): Promise<string> {
  const server: Server = createServer((req, res) => {
    const path = join(dir, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    let body: Buffer;
    try {
      body = readFileSync(path);
    } catch {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

describe("inetboot doctor", { timeout: 120_000 }, () => {
  it("names a missing kernel, an unreachable URL and a port another program holds; exit 1", async (t) => {
    const dir = tempDir(t);
    const dead = await closedPort();
    const http = await closedPort();
    // A UDP port held by this test process: the TFTP port of the configuration.
    const udp = createSocket("udp4");
    await new Promise<void>((r) => udp.bind(0, "127.0.0.1", r));
    t.after(() => udp.close());
    const tftp = udp.address().port;
    writeFileSync(join(dir, "stage.kpxe"), "first stage");
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `http: { port: ${http}, address: 127.0.0.1 }
tftp: { enabled: true, port: ${tftp}, firstStages: { bios: stage.kpxe } }
state: ${dir}/state
entries:
  hello: { kernel: ${dir}/vmlinuz }
  net: { kernel: "http://127.0.0.1:${dead}/linux" }
`,
    );
    const r = await inetboot(["doctor", "--config", config, "--json"]);
    assert.equal(r.code, 1, r.stderr);
    const { ok, checks } = parse(r.stdout);
    assert.equal(ok, false);
    assert.deepEqual(outline(checks), [
      ["config", "warn"],
      ["server", "fail"],
      [`port tftp ${tftp}/udp`, "fail"],
      [`port http ${http}/tcp`, "fail"],
      ["first stage bios", "ok"],
      ["entry hello kernel", "fail"],
      ["entry net kernel", "fail"],
      ["cache folder", "ok"],
      ["state folder", "ok"],
      ["clock", "ok"],
    ]);
    assert.match(
      byName(checks, "config").detail,
      /serve\.yaml:5: entries\.hello\.kernel: file .*vmlinuz does not exist/,
    );
    assert.equal(byName(checks, "entry hello kernel").detail, `${dir}/vmlinuz does not exist`);
    assert.match(byName(checks, "entry hello kernel").fix ?? "", /entries\.hello\.kernel/);
    assert.equal(
      byName(checks, "entry net kernel").detail,
      `http://127.0.0.1:${dead}/linux: connection refused`,
    );
    const taken = byName(checks, `port tftp ${tftp}/udp`);
    assert.match(taken.detail, new RegExp(`^taken by node \\(pid ${process.pid}\\b`));
    assert.match(taken.fix ?? "", /change tftp\.port/);
    assert.equal(byName(checks, `port http ${http}/tcp`).detail, "free: the server is not running");
    assert.equal(byName(checks, "first stage bios").detail, join(dir, "stage.kpxe"));
    // The text form: one line per check with its mark, the fix under it.
    const text = await inetboot(["doctor", "--config", config]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /^✗ entry hello kernel: .*vmlinuz does not exist\n {4}fix: /m);
    assert.match(text.stdout, /^! config: /m);
    assert.match(text.stdout, /^✓ state folder: /m);
  });

  it("an image store with a signed release is reachable and trusted; another key is refused", async (t) => {
    const dir = tempDir(t);
    const key = join(dir, "release.key");
    const other = join(dir, "other.key");
    await inetbootOk(["keygen", "--out", key]);
    await inetbootOk(["keygen", "--out", other]);
    const store = join(dir, "store");
    writeImage(join(dir, "disk.img"), [200_000]);
    await inetbootOk([
      "pack",
      join(dir, "disk.img"),
      "--store",
      store,
      "--name",
      "os",
      "--key",
      key,
    ]);
    const url = await serveDir(t, store);
    const config = join(dir, "serve.yaml");
    const nbd = await closedPort();
    writeFileSync(
      config,
      `http: { port: ${await closedPort()}, address: 127.0.0.1 }
nbd: { port: ${nbd} }
state: ${dir}/state
entries:
  good: { image: { name: os, store: "${url}", trust: [release.key.pub] } }
  local: { image: { name: os, store: store, trust: [release.key.pub] } }
  wrong: { image: { name: os, store: "${url}", trust: [other.key.pub] } }
  gone: { image: { name: nothing, store: "${url}", trust: [release.key.pub] } }
`,
    );
    const r = await inetboot(["doctor", "--config", config, "--json"]);
    const { checks } = parse(r.stdout);
    const good = byName(checks, `image good store ${url}`);
    assert.equal(good.outcome, "ok", good.detail);
    assert.match(good.detail, /^os revision 1 signed by trusted key [0-9A-F]{16}, signed \d{4}-/);
    assert.equal(byName(checks, `image local store ${store}`).outcome, "ok");
    const wrong = byName(checks, `image wrong store ${url}`);
    assert.equal(wrong.outcome, "fail");
    assert.match(wrong.detail, /Refusing release .*releases\/os\/1\.json/);
    assert.match(wrong.fix ?? "", /entries\.wrong\.image\.trust/);
    const gone = byName(checks, `image gone store ${url}`);
    assert.equal(gone.outcome, "fail");
    assert.match(gone.detail, /no releases of nothing/);
    // The store's web server sent its Date: the clock was compared with it.
    const clock = byName(checks, "clock");
    assert.equal(clock.outcome, "ok");
    assert.match(
      clock.detail,
      /^\d+ s (ahead of|behind) 127\.0\.0\.1:\d+ \(the most off of \d+ servers\)$/,
    );
    assert.match(clock.detail, /^(0|1) s/);
    // Image entries are NBD exports: the doctor looks at nbd.port too.
    assert.equal(byName(checks, `port nbd ${nbd}/tcp`).outcome, "fail");
  });

  it("sees a running inetboot serve bound and healthy; stopped, says the ports are free and how to start it", async (t) => {
    if (!requireNetns(t)) return;
    const lan = createLan(t, "10.97.0");
    lan.addHost(); // a port on the bridge: it has a carrier
    const dir = tempDir(t);
    writeFileSync(join(dir, "stage.kpxe"), "first stage");
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen: { interface: br0 }
dhcp: { mode: proxy }
tftp: { enabled: true, firstStages: { bios: stage.kpxe } }
http: { port: 8080 }
state: ${dir}/state
entries:
  hello: { kernel: stage.kpxe }
`,
    );
    const serve = await startServe(lan, config);
    const doctor = (): Promise<{ code: number | null; stdout: string; stderr: string }> =>
      run("ip", [
        "netns",
        "exec",
        lan.server,
        process.execPath,
        CLI,
        "doctor",
        "--config",
        config,
        "--json",
      ]);
    const up = await doctor();
    assert.equal(up.code, 0, up.stdout + up.stderr);
    const running = parse(up.stdout).checks;
    const pid = serve.child.pid;
    assert.deepEqual(outline(running), [
      ["config", "ok"],
      ["interface br0", "ok"],
      ["server", "ok"],
      ["port dhcp 67/udp", "ok"],
      ["port proxy 4011/udp", "ok"],
      ["port tftp 69/udp", "ok"],
      ["port http 8080/tcp", "ok"],
      ["first stage bios", "ok"],
      ["entry hello kernel", "ok"],
      ["cache folder", "ok"],
      ["state folder", "ok"],
      ["clock", "ok"],
    ]);
    assert.equal(byName(running, "interface br0").detail, "br0 is up with 10.97.0.1");
    assert.equal(
      byName(running, "server").detail,
      `inetboot (pid ${pid}) at http://127.0.0.1:8080 serving ${config}; /healthz ok`,
    );
    for (const port of ["dhcp 67/udp", "proxy 4011/udp", "tftp 69/udp", "http 8080/tcp"])
      assert.equal(
        byName(running, `port ${port}`).detail,
        `bound by the running inetboot (pid ${pid})`,
      );

    serve.child.kill("SIGTERM");
    await new Promise((r) => serve.child.once("exit", r));
    const down = await doctor();
    assert.equal(down.code, 1);
    const stopped = parse(down.stdout).checks;
    assert.equal(byName(stopped, "server").outcome, "fail");
    for (const port of ["dhcp 67/udp", "proxy 4011/udp", "tftp 69/udp", "http 8080/tcp"]) {
      const c = byName(stopped, `port ${port}`);
      assert.equal(c.outcome, "fail");
      assert.equal(c.detail, "free: the server is not running");
      assert.equal(
        c.fix,
        `start it: inetboot serve --config ${config} (as root, or with CAP_NET_BIND_SERVICE: ports below 1024)`,
      );
    }
  });
});
