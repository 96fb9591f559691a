// The boot server's HTTP side, in process: iPXE scripts per machine, menus, one-shot entries,
// kernel and initrd files with Range and ETags, remote kernels fetched once from nginx and
// hash-checked, and the events and machines API.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { CLI, inetboot, tempDir } from "./helpers.ts";
import { createLan, requireNetns } from "./netns.ts";
import { startNginx } from "./nginx.ts";

const MAC = "52:54:00:12:34:56";

async function server(
  t: TestContext,
  yaml: (dir: string) => string,
): Promise<{ base: string; srv: BootServer; dir: string }> {
  const dir = tempDir(t);
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(100_000, 1));
  writeFileSync(join(dir, "initrd.img"), Buffer.from("initrd-bytes"));
  const config = parseConfig(
    `http: { port: 0, address: 127.0.0.1 }\nstate: ${dir}/state\n${yaml(dir)}`,
    join(dir, "serve.yaml"),
  );
  const srv = new BootServer(config);
  await srv.start();
  t.after(() => srv.stop());
  return { base: `http://127.0.0.1:${srv.httpPort}`, srv, dir };
}

async function text(url: string, init?: RequestInit): Promise<string> {
  const res = await fetch(url, init);
  assert.equal(res.status, 200, `${url}: ${res.status}`);
  return res.text();
}

const ENTRIES = (dir: string): string => `entries:
  hello:
    title: Hello kernel
    kernel: ${dir}/vmlinuz
    initrd: [${dir}/initrd.img]
    cmdline: console=ttyS0 quiet
  install: { kernel: ${dir}/vmlinuz, cmdline: auto=true, once: true }
  menu: { menu: [hello, install, local], timeout: 5, default: hello }
machines:
  - { match: { mac: "${MAC}" }, boot: hello }
  - { match: { mac: "52:54:00:00:00:02" }, boot: install }
  - { match: { labels: { rack: r7 } }, boot: install }
default: menu
`;

describe("boot server HTTP", () => {
  it("hands each machine its script; menus for the rest", async (t) => {
    const { base } = await server(t, ENTRIES);
    const boot = await text(`${base}/boot.ipxe?rack=r7`);
    assert.match(boot, /^#!ipxe\n/);
    assert.match(
      boot,
      /chain --autofree http:\/\/127\.0\.0\.1:\d+\/ipxe\/boot\?mac=\$\{netX\/mac:hexhyp\}.*&rack=r7/,
    );

    const plan = await text(
      `${base}/ipxe/boot?mac=52-54-00-12-34-56&buildarch=x86_64&platform=pcbios`,
    );
    assert.match(
      plan,
      /kernel http:\/\/127\.0\.0\.1:\d+\/files\/hello\/kernel\?.*mac=52-54-00-12-34-56.* initrd=initrd0\.img console=ttyS0 quiet/,
    );
    assert.match(
      plan,
      /initrd --name initrd0\.img http:\/\/127\.0\.0\.1:\d+\/files\/hello\/initrd\/0\?/,
    );
    assert.match(plan, /\nboot \|\| goto failed\n/);

    const menu = await text(`${base}/ipxe/boot?mac=52-54-00-aa-bb-cc`);
    assert.match(menu, /menu inetboot|menu menu/);
    assert.match(menu, /item hello Hello kernel\n/);
    assert.match(menu, /choose --timeout 5000 --default hello selected/);
    assert.match(
      menu,
      /chain --autofree http:\/\/127\.0\.0\.1:\d+\/ipxe\/entry\/\$\{selected\}\?mac=52-54-00-aa-bb-cc/,
    );
    assert.match(await text(`${base}/ipxe/entry/local?mac=52-54-00-aa-bb-cc`), /\nexit\n/);

    const labelled = await text(`${base}/ipxe/boot?mac=52-54-00-aa-bb-cd&rack=r7`);
    assert.match(labelled, /cmdline|auto=true/);
  });

  it("serves kernels and initrds with Range, ETag and clear 404s", async (t) => {
    const { base, dir } = await server(t, ENTRIES);
    const kernel = readFileSync(join(dir, "vmlinuz"));
    const full = await fetch(`${base}/files/hello/kernel`);
    assert.equal(full.status, 200);
    assert.deepEqual(Buffer.from(await full.arrayBuffer()), kernel);
    const etag = full.headers.get("etag") ?? "";
    const part = await fetch(`${base}/files/hello/kernel`, { headers: { Range: "bytes=10-19" } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get("content-range"), `bytes 10-19/${kernel.length}`);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), kernel.subarray(10, 20));
    const suffix = await fetch(`${base}/files/hello/kernel`, { headers: { Range: "bytes=-5" } });
    assert.equal((await suffix.arrayBuffer()).byteLength, 5);
    const beyond = await fetch(`${base}/files/hello/kernel`, {
      headers: { Range: "bytes=999999-" },
    });
    assert.equal(beyond.status, 416);
    await beyond.body?.cancel();
    const notModified = await fetch(`${base}/files/hello/kernel`, {
      headers: { "If-None-Match": etag },
    });
    assert.equal(notModified.status, 304);
    assert.equal(await text(`${base}/files/hello/initrd/0`), "initrd-bytes");
    for (const path of [
      "/files/hello/initrd/1",
      "/files/nope/kernel",
      "/files/../etc/passwd",
      "/files/hello/..%2f..%2fetc%2fpasswd",
    ]) {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(await res.text(), /root:/);
    }
  });

  it("boots a once entry one time, then the local disk", async (t) => {
    const { base } = await server(t, ENTRIES);
    const q = "mac=52-54-00-00-00-02";
    assert.match(await text(`${base}/ipxe/boot?${q}`), /auto=true/);
    await text(`${base}/files/install/kernel?${q}`);
    const after = await text(`${base}/ipxe/boot?${q}`);
    assert.match(after, /booting from the local disk\nexit/);
    const machines = (await (await fetch(`${base}/api/machines`)).json()) as {
      mac: string;
      next: { entry: string; rule: string };
    }[];
    const m = machines.find((x) => x.mac === "52:54:00:00:00:02");
    assert.equal(m?.next.entry, "local");
    assert.match(m?.next.rule ?? "", /once: install already booted/);
  });

  it("records every stage as an event and a machine record", async (t) => {
    const { base } = await server(t, ENTRIES);
    await text(
      `${base}/ipxe/boot?mac=52-54-00-12-34-56&buildarch=x86_64&platform=efi&hostname=node1`,
    );
    await text(`${base}/files/hello/kernel?mac=52-54-00-12-34-56`);
    await text(`${base}/files/hello/initrd/0?mac=52-54-00-12-34-56`);
    const events = (await (await fetch(`${base}/api/events?mac=${MAC}`)).json()) as {
      stage: string;
      seq: number;
      bytes?: number;
    }[];
    assert.deepEqual(
      events.map((e) => e.stage),
      ["http-plan", "http-kernel", "http-initrd"],
    );
    assert.equal(events[1].bytes, 100_000);
    const later = (await (
      await fetch(`${base}/api/events?since=${events[1].seq}`)
    ).json()) as unknown[];
    assert.equal(later.length, 1);
    const [machine] = (await (await fetch(`${base}/api/machines`)).json()) as Record<
      string,
      unknown
    >[];
    assert.equal(machine.mac, MAC);
    assert.equal(machine.lastStage, "http-initrd");
    assert.equal(machine.entry, "hello");
    assert.equal(machine.rule, "machines[0]");
    assert.equal(machine.hostname, "node1");
    assert.deepEqual(machine.ipxe, { buildarch: "x86_64", platform: "efi" });
  });

  it("fetches a remote kernel once, checks its hash, and refuses a wrong one", async (t) => {
    const origin = tempDir(t);
    const kernel = Buffer.alloc(300_000, 9);
    writeFileSync(join(origin, "vmlinuz"), kernel);
    const nginx = await startNginx(t, origin);
    if (!nginx) return;
    const sha = createHash("sha256").update(kernel).digest("hex");
    const { base } = await server(
      t,
      () => `entries:
  net: { kernel: { url: "${nginx.url}vmlinuz", sha256: ${sha} } }
  bad: { kernel: { url: "${nginx.url}vmlinuz", sha256: "${"0".repeat(64)}" } }
  gone: { kernel: "${nginx.url}missing" }
default: net
`,
    );
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${base}/files/net/kernel`);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), kernel);
      assert.equal(res.headers.get("etag"), `"${sha}"`);
    }
    const fetches = readFileSync(nginx.accessLog, "utf8")
      .split("\n")
      .filter((l) => l.includes("GET /vmlinuz"));
    assert.equal(fetches.length, 1, "downloaded once for three boots");
    const bad = await fetch(`${base}/files/bad/kernel`);
    assert.equal(bad.status, 502);
    assert.match(await bad.text(), /has SHA-256 [0-9a-f]{64}, not the configured 0{64}/);
    const gone = await fetch(`${base}/files/gone/kernel`);
    assert.equal(gone.status, 502);
    assert.match(await gone.text(), /answered 404; check the URL/);
  });
});

describe("inetboot serve on the command line", () => {
  it("checks a configuration: exit 2 with file:line problems, or OK", async (t) => {
    const dir = tempDir(t);
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "dhcp:\n  mode: proxi\n");
    const r = await inetboot(["serve", "--config", bad, "--check"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${bad}:2: dhcp\\.mode: expected one of off, proxy, full`));
    const good = join(dir, "good.yaml");
    writeFileSync(good, "entries:\n  x: { chain: http://example.org/x.ipxe }\ndefault: x\n");
    const ok = await inetboot(["serve", "--config", good, "--check"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /OK \(\d+ entries, 0 machine rules\)/);
  });

  it("stops with a clear message when the boot interface does not exist", async (t) => {
    const dir = tempDir(t);
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen: { interface: nosuch0 }\ndhcp: { mode: proxy }\nhttp: { port: 0 }\nstate: ${dir}/state\n`,
    );
    const r = await inetboot(["serve", "--config", config]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Network interface "nosuch0" does not exist \(this host has: .*lo/);
  });

  it("npm start's built-in defaults serve the menu on port 8080 (in a namespace)", async (t) => {
    if (!requireNetns(t)) return;
    const lan = createLan(t);
    const child = lan.spawn(lan.server, process.execPath, [CLI, "serve"], {
      INETBOOT_STATE_DIR: tempDir(t),
    });
    let err = "";
    child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    for (let i = 0; i < 100 && !err.includes("Try it now"); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(err, /HTTP {3}http:\/\/127\.0\.0\.1:8080\//);
    assert.match(err, /Next: write a config/);
    const script = lan.exec(lan.server, "curl", [
      "-sf",
      "http://127.0.0.1:8080/ipxe/boot?mac=52-54-00-00-00-01",
    ]);
    assert.match(script, /^#!ipxe\n:start\nmenu inetboot\n/);
    assert.match(script, /item local Boot from the local disk/);
  });
});
