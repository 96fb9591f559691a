// The boot server against another host on its LAN: per-boot export names, exports that stay
// with the machine that is using them, plans refused when the MAC is not the asker's (full
// DHCP), and what anyone can send (plans for many MACs, long host names, odd paths and Host
// headers, big forms) kept within bounds. In process on loopback: 127.0.0.1 is the machine,
// other 127.0.0.0/8 addresses are other hosts.
import assert from "node:assert/strict";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { pino } from "pino";
import type { Logger } from "../src/lib/log.ts";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import type { Entry } from "../src/serve/config.ts";
import { inetbootOk, tempDir, writeImage } from "./helpers.ts";
import { TestNbdClient } from "./nbd-client.ts";

const VICTIM = "52:54:00:00:66:01";
const OTHER = "52:54:00:00:66:02";
const TOKEN = "write-token-for-tests";

interface Reply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/** An HTTP request from a chosen local address (another "host" on loopback). */
function http(
  port: number,
  path: string,
  options: { from?: string; headers?: Record<string, string>; method?: string; body?: Buffer } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: options.method ?? "GET",
        localAddress: options.from,
        headers: options.headers,
        agent: false,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(parts).toString(),
            headers: res.headers,
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/** Opens an export over NBD from a chosen local address. */
function nbdFrom(port: number, from: string, name: string): Promise<TestNbdClient> {
  return TestNbdClient.negotiating(connect({ port, host: "127.0.0.1", localAddress: from })).then(
    (c) => c.go(name),
  );
}

async function tinyStore(dir: string): Promise<string> {
  const disk = join(dir, "disk.img");
  const store = join(dir, "store");
  await inetbootOk(["keygen", "--out", join(dir, "k")]);
  writeImage(disk, [Buffer.alloc(1 << 20, 7), { zero: 3 << 20 }]);
  await inetbootOk(["pack", disk, "--store", store, "--name", "tiny", "--key", join(dir, "k")]);
  return store;
}

/** Log lines the server wrote (pino JSON), for checks that secrets stay out of them. */
function capturedLogger(): { logger: Logger; text: () => string } {
  const lines: string[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void lines.push(line) });
  return { logger, text: () => lines.join("") };
}

async function start(
  t: TestContext,
  dir: string,
  store: string,
  extra = "",
  logger?: Logger,
): Promise<BootServer> {
  const config = parseConfig(
    `http: { port: 0, address: 127.0.0.1 }
${extra.includes("nbd:") ? "" : "nbd: { port: 0 }"}
state: ${join(dir, "state")}
ui: { write: true, token: ${TOKEN} }
${extra}
entries:
  eph:
    image: { name: tiny, store: ${store}, trust: [${join(dir, "k.pub")}] }
    kernel: /vmlinuz
  kept:
    image: { name: tiny, store: ${store}, trust: [${join(dir, "k.pub")}] }
    kernel: /vmlinuz
    disk: per-machine
machines:
  - { match: { mac: "${VICTIM}" }, boot: kept }
default: eph
`,
    join(dir, "serve.yaml"),
  );
  const srv = new BootServer(config, { logger });
  await srv.start();
  t.after(() => srv.stop());
  return srv;
}

/** The export name in a plan's nbdroot=. */
function exportOf(script: string): string {
  const m = /nbdroot=[\d.]+:\d+\/(\S+)/.exec(script);
  assert.ok(m, script);
  return m[1];
}

const openFds = (): number => readdirSync("/proc/self/fd").length;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
/** Heap bytes still held after a full collection (what requests left behind for good). */
function retainedHeap(): number {
  gc();
  return process.memoryUsage().heapUsed;
}

describe("the boot server on a hostile LAN", () => {
  it("a plan's export has an unguessable name that only its machine opens; a claim of the MAC from elsewhere never cuts the machine off", async (t) => {
    const dir = tempDir(t);
    const store = await tinyStore(dir);
    const log = capturedLogger();
    const srv = await start(t, dir, store, "", log.logger);
    const port = srv.httpPort;
    const mine = exportOf((await http(port, `/ipxe/boot?mac=${VICTIM}`)).body);
    assert.match(mine, /^kept-52-54-00-00-66-01-[0-9a-f]{24}$/);
    // The MAC alone, or a wrong token, opens nothing.
    for (const name of ["kept-52-54-00-00-66-01", `kept-52-54-00-00-66-01-${"0".repeat(24)}`]) {
      await assert.rejects(nbdFrom(srv.nbdPort, "127.0.0.1", name), /NBD_OPT_GO failed/);
    }
    // Another host cannot open the machine's export even with its name.
    await assert.rejects(nbdFrom(srv.nbdPort, "127.0.0.9", mine), /NBD_OPT_GO failed/);
    const victim = await nbdFrom(srv.nbdPort, "127.0.0.1", mine);
    t.after(() => victim.close());
    assert.equal((await victim.write(2 << 20, Buffer.alloc(4096, 0x41))).error, 0);
    assert.equal((await victim.flush()).error, 0);

    // Another host claims the MAC: it gets a ticket of its own, the machine keeps its disk.
    const claimed = exportOf(
      (await http(port, `/ipxe/boot?mac=${VICTIM}`, { from: "127.0.0.9" })).body,
    );
    assert.notEqual(claimed, mine);
    assert.deepEqual(await victim.readAt(2 << 20, 4096), Buffer.alloc(4096, 0x41));
    assert.equal((await victim.write(3 << 20, Buffer.alloc(4096, 0x42))).error, 0);
    // The claimer cannot open the machine's connected export, nor its own new name for the
    // machine's disk while the machine is connected to it.
    await assert.rejects(nbdFrom(srv.nbdPort, "127.0.0.9", mine), /NBD_OPT_GO failed/);
    await assert.rejects(nbdFrom(srv.nbdPort, "127.0.0.9", claimed), /NBD_OPT_GO failed/);

    // Ephemeral disks: a second plan for the same MAC never closes the first boot's overlay.
    const eph1 = exportOf((await http(port, `/ipxe/boot?mac=${OTHER}`)).body);
    const first = await nbdFrom(srv.nbdPort, "127.0.0.1", eph1);
    t.after(() => first.close());
    assert.equal((await first.write(0, Buffer.alloc(4096, 0x43))).error, 0);
    const eph2 = exportOf(
      (await http(port, `/ipxe/boot?mac=${OTHER}`, { from: "127.0.0.9" })).body,
    );
    assert.notEqual(eph2, eph1);
    assert.deepEqual(await first.readAt(0, 4096), Buffer.alloc(4096, 0x43), "no EIO, same data");
    const second = await nbdFrom(srv.nbdPort, "127.0.0.9", eph2);
    t.after(() => second.close());
    assert.deepEqual(await second.readAt(0, 4096), Buffer.alloc(4096, 7), "a fresh overlay");

    // No full export name in the logs, the events or the API (only the token's first digits).
    const api = (await http(port, "/api/events")).body + (await http(port, "/api/machines")).body;
    for (const name of [mine, claimed, eph1, eph2]) {
      assert.ok(!log.text().includes(name), `${name} is in the log`);
      assert.ok(!api.includes(name), `${name} is in the API`);
    }
    assert.match(log.text(), /nbd client attached/);
  });

  it("with nbd.allow: any a boot's export is never listed, and the token is all it opens by", async (t) => {
    const dir = tempDir(t);
    const store = await tinyStore(dir);
    const srv = await start(t, dir, store, "nbd: { port: 0, allow: any }");
    const name = exportOf((await http(srv.httpPort, `/ipxe/boot?mac=${OTHER}`)).body);
    const lister = await TestNbdClient.negotiating(
      connect({ port: srv.nbdPort, host: "127.0.0.1", localAddress: "127.0.0.1" }),
    );
    t.after(() => lister.close());
    lister.sendOption(3, Buffer.alloc(0)); // NBD_OPT_LIST
    const listed: string[] = [];
    for (;;) {
      const r = await lister.readOptionReply();
      if (r.type !== 2) break; // NBD_REP_SERVER
      listed.push(r.payload.subarray(4, 4 + r.payload.readUInt32BE(0)).toString());
    }
    assert.deepEqual(listed, [], "nothing listed, not even to the machine");
    // Another address opens it by its name (allow: any), not by the MAC.
    await assert.rejects(
      nbdFrom(srv.nbdPort, "127.0.0.9", "eph-52-54-00-00-66-02"),
      /NBD_OPT_GO failed/,
    );
    const c = await nbdFrom(srv.nbdPort, "127.0.0.9", name);
    t.after(() => c.close());
    assert.deepEqual(await c.readAt(0, 16), Buffer.alloc(16, 7));
  });

  it("a kept disk reopened after a bigger release keeps the size of the release it was made on", async (t) => {
    const dir = tempDir(t);
    const store = await tinyStore(dir);
    const srv = await start(t, dir, store);
    const first = await nbdFrom(
      srv.nbdPort,
      "127.0.0.1",
      exportOf((await http(srv.httpPort, `/ipxe/boot?mac=${VICTIM}`)).body),
    );
    assert.equal(first.size, 4 << 20);
    assert.equal((await first.write(1 << 20, Buffer.alloc(4096, 0x44))).error, 0);
    assert.equal((await first.flush()).error, 0);
    first.close();
    // Release 2 is twice as big; the server opens it for the entry (a restart-free refresh).
    writeImage(join(dir, "disk.img"), [Buffer.alloc(1 << 20, 9), { zero: 7 << 20 }]);
    await inetbootOk([
      "pack",
      join(dir, "disk.img"),
      "--store",
      store,
      "--name",
      "tiny",
      "--key",
      join(dir, "k"),
    ]);
    const kept = srv.config.entries.get("kept") as Extract<Entry, { kind: "image" }>;
    await srv.images?.setPin(kept, null); // the entry reopens its latest release
    const other = await nbdFrom(
      srv.nbdPort,
      "127.0.0.1",
      exportOf((await http(srv.httpPort, `/ipxe/boot?mac=${OTHER}`)).body),
    );
    t.after(() => other.close());
    assert.equal(other.size, 8 << 20, "a new machine gets release 2");
    const again = await nbdFrom(
      srv.nbdPort,
      "127.0.0.1",
      exportOf((await http(srv.httpPort, `/ipxe/boot?mac=${VICTIM}`)).body),
    );
    t.after(() => again.close());
    assert.equal(again.size, 4 << 20, "the machine's disk keeps its release's size");
    assert.deepEqual(await again.readAt(0, 16), Buffer.alloc(16, 7));
    assert.deepEqual(await again.readAt(1 << 20, 16), Buffer.alloc(16, 0x44), "with its write");
  });

  it("with full DHCP a plan must come from the address leased to its MAC", async (t) => {
    const dir = tempDir(t);
    const store = await tinyStore(dir);
    const leases = join(dir, "leases.json");
    const expires = Date.now() + 3_600_000;
    writeFileSync(
      leases,
      JSON.stringify({
        format: "inetboot-leases 1",
        leases: [
          { mac: VICTIM, ip: "127.0.0.101", expires },
          { mac: OTHER, ip: "127.0.0.102", expires },
        ],
        declined: [],
      }),
    );
    const dhcpPort = 20000 + Math.floor(Math.random() * 20000);
    const srv = await start(
      t,
      dir,
      store,
      `listen: { interface: lo, address: 127.0.0.1 }
dhcp: { mode: full, range: [127.0.0.100, 127.0.0.150], port: ${dhcpPort}, proxyPort: ${dhcpPort + 1}, leaseFile: ${leases} }`,
    );
    const port = srv.httpPort;
    // The other machine's address, and an address holding no lease, claim the victim's MAC.
    for (const from of ["127.0.0.102", "127.0.0.7"]) {
      const r = await http(port, `/ipxe/boot?mac=${VICTIM}`, { from });
      assert.equal(r.status, 403, from);
      assert.match(r.body, /refused: .*lease/);
      assert.doesNotMatch(r.body, /nbdroot/);
    }
    const events = srv.events.events();
    assert.ok(events.some((e) => e.stage === "plan-refused" && e.mac === undefined));
    assert.equal(
      srv.events.machine(VICTIM),
      undefined,
      "the claims left the victim's record alone",
    );
    // The machine itself, from its leased address, boots.
    const own = await http(port, `/ipxe/boot?mac=${VICTIM}`, { from: "127.0.0.101" });
    assert.equal(own.status, 200);
    const name = exportOf(own.body);
    const c = await nbdFrom(srv.nbdPort, "127.0.0.101", name);
    t.after(() => c.close());
    assert.deepEqual(await c.readAt(0, 16), Buffer.alloc(16, 7));
  });

  it("plans for thousands of MACs, long host names and odd requests stay within bounds", async (t) => {
    const dir = tempDir(t);
    const store = await tinyStore(dir);
    const srv = await start(t, dir, store);
    const port = srv.httpPort;
    await http(port, `/ipxe/boot?mac=${OTHER}`); // opens the image (its files and cache)
    const fds = openFds();
    const heap = retainedHeap();
    const long = "h".repeat(7000);
    for (let i = 0; i < 1500; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, j) => {
          const n = i + j;
          const mac = `52-54-01-00-${((n >> 8) & 255).toString(16).padStart(2, "0")}-${(n & 255).toString(16).padStart(2, "0")}`;
          const from = `127.0.${1 + (n % 150)}.1`;
          return http(port, `/ipxe/boot?mac=${mac}&hostname=${long}${n}&rack=${long}`, { from });
        }),
      );
    }
    const counts = srv.images?.counts;
    assert.ok(counts, "the image entry is open");
    assert.ok(counts.tickets <= 150 * 8 + 1, `tickets: ${counts.tickets}`);
    assert.equal(counts.opened, 0, "no disk is opened before a client uses it");
    assert.ok(openFds() - fds < 30, `open files grew by ${openFds() - fds}`);
    const eph = join(dir, "state", "ephemeral");
    assert.ok(!existsSync(eph) || readdirSync(eph, { recursive: true }).length <= 1, "no overlay");
    const machines = await http(port, "/api/machines");
    assert.ok(machines.body.length < 4_000_000, `/api/machines is ${machines.body.length} bytes`);
    const rows = JSON.parse(machines.body) as { hostname?: string }[];
    assert.ok(rows.every((r) => (r.hostname?.length ?? 0) <= 253));
    const grew = (retainedHeap() - heap) / 1e6;
    assert.ok(grew < 40, `the heap kept ${grew.toFixed(0)} MB`);

    // Prototype names under /firmware are not files; a broken Host is not a base URL.
    for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
      assert.equal((await http(port, `/firmware/${name}`)).status, 404, name);
    }
    const plan = await http(port, `/ipxe/boot?mac=${VICTIM}`, { headers: { Host: "[" } });
    assert.equal(plan.status, 200);
    assert.match(plan.body, /nbdroot=127\.0\.0\.1:/);
    assert.ok(!srv.events.events().some((e) => e.stage === "image-error"));

    // A form over the limit gets the 413 page, not a reset; pages forbid framing and scripts
    // other than their own.
    const form = await http(port, `/ui/machines/${VICTIM}/reset-disk`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: Buffer.from(`entry=kept&token=${TOKEN}&pad=${"x".repeat(64 * 1024)}`),
    });
    assert.equal(form.status, 413);
    assert.match(form.body, /The form is too large/);
    const page = await http(port, "/ui/machines");
    const csp = String(page.headers["content-security-policy"]);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/=]+'/);
    assert.equal(page.headers["x-frame-options"], "DENY");
  });
});
