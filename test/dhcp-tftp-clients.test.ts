// Real DHCP and TFTP clients against `inetboot serve` in a test LAN: dhclient and busybox
// udhcpc get leases in full mode (a reservation, leases kept across a restart, RELEASE, a
// machine rule's host name as option 12);
// atftp, tftp-hpa and curl fetch over TFTP with and without blksize, tsize and windowsize;
// path traversal and writes are refused.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { requireTool, tempDir } from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { TestLan } from "./netns.ts";

const RESERVED_MAC = "52:54:00:aa:00:01";
/** A machine whose rule gives it a host name (no reservation). */
const NAMED_MAC = "52:54:00:aa:00:02";

function serveConfig(lan: TestLan, dir: string): string {
  const path = join(dir, "serve.yaml");
  writeFileSync(
    path,
    `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp:
  mode: full
  range: [${lan.prefix}.100, ${lan.prefix}.150]
  router: ${lan.serverAddress}
  dns: [${lan.serverAddress}]
  domain: lab.test
  leaseFile: ${dir}/leases.json
  reservations:
    - { mac: "${RESERVED_MAC}", ip: ${lan.prefix}.20, hostname: pinned }
tftp: { enabled: true, root: ${dir}/tftp }
http: { port: 8080 }
state: ${dir}/state
machines:
  - { match: { mac: "${NAMED_MAC}" }, boot: local, hostname: from-rule }
`,
  );
  return path;
}

async function waitForFile(path: string, timeoutMs = 20_000): Promise<string> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (existsSync(path)) {
      const text = readFileSync(path, "utf8");
      if (text.trim()) return text;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${path} did not appear`);
}

describe("real DHCP and TFTP clients against inetboot serve", { timeout: 300_000 }, () => {
  it("dhclient and udhcpc get leases in full mode; leases survive a restart", async (t: TestContext) => {
    if (!requireNetns(t) || !requireTool(t, "dhclient", "isc-dhcp-client")) return;
    if (!requireTool(t, "udhcpc", "udhcpc")) return;
    const dir = tempDir(t);
    mkdirSync(join(dir, "tftp"));
    const lan = createLan(t);
    const config = serveConfig(lan, dir);
    let serve = await startServe(lan, config);

    // dhclient: the script records what it was given.
    const h1 = lan.addHost();
    const script = join(dir, "dhclient-script");
    writeFileSync(
      script,
      `#!/bin/sh\ncase "$reason" in BOUND|REBOOT|RENEW) echo "$new_ip_address $new_subnet_mask $new_routers $new_domain_name_servers $new_domain_name" > ${dir}/dhclient.out;; esac\nexit 0\n`,
    );
    chmodSync(script, 0o755);
    const dh = ["-1", "-sf", script, "-lf", join(dir, "dh.leases"), "-pf", join(dir, "dh.pid")];
    lan.exec(h1.ns, "dhclient", [...dh, "eth0"]);
    const got = (await waitForFile(join(dir, "dhclient.out"))).trim();
    assert.equal(
      got,
      `${lan.prefix}.100 255.255.255.0 ${lan.serverAddress} ${lan.serverAddress} lab.test`,
    );
    lan.exec(h1.ns, "dhclient", ["-x", "-pf", join(dir, "dh.pid")]); // stop, keep the lease

    // udhcpc on a machine with a reservation.
    const h2 = lan.addHost();
    lan.exec(h2.ns, "ip", ["link", "set", "eth0", "address", RESERVED_MAC]);
    const uscript = join(dir, "udhcpc-script");
    writeFileSync(
      uscript,
      `#!/bin/sh\n[ "$1" = bound ] && echo "$ip $subnet $router $hostname" > ${dir}/udhcpc.out\nexit 0\n`,
    );
    chmodSync(uscript, 0o755);
    lan.exec(h2.ns, "udhcpc", ["-i", "eth0", "-n", "-q", "-f", "-s", uscript]);
    assert.equal(
      (await waitForFile(join(dir, "udhcpc.out"))).trim(),
      `${lan.prefix}.20 255.255.255.0 ${lan.serverAddress} pinned`,
    );

    // Restart the server: the lease file is reloaded, so a new machine does not get .100.
    serve.child.kill("SIGTERM");
    await new Promise((r) => serve.child.once("exit", r));
    const leases = JSON.parse(readFileSync(join(dir, "leases.json"), "utf8")) as {
      leases: { ip: string }[];
    };
    assert.ok(leases.leases.some((l) => l.ip === `${lan.prefix}.100`));
    serve = await startServe(lan, config);
    const h3 = lan.addHost();
    writeFileSync(join(dir, "udhcpc.out"), "");
    lan.exec(h3.ns, "udhcpc", ["-i", "eth0", "-n", "-q", "-f", "-s", uscript]);
    assert.match(
      await waitForFile(join(dir, "udhcpc.out")),
      new RegExp(`^${lan.prefix.replace(/\./g, "\\.")}\\.101 `),
    );

    // dhclient renews its old address, then RELEASEs it.
    writeFileSync(join(dir, "dhclient.out"), "");
    lan.exec(h1.ns, "dhclient", [...dh, "eth0"]);
    assert.match(
      await waitForFile(join(dir, "dhclient.out")),
      new RegExp(`^${lan.prefix.replace(/\./g, "\\.")}\\.100 `),
    );
    lan.exec(h1.ns, "ip", ["addr", "add", `${lan.prefix}.100/24`, "dev", "eth0"]);
    lan.exec(h1.ns, "dhclient", ["-r", ...dh, "eth0"]);
    await serve.waitFor((l) => l.event === "dhcp-release");

    // A machine rule's hostname: goes out as option 12 (installers name themselves with it).
    const h4 = lan.addHost();
    lan.exec(h4.ns, "ip", ["link", "set", "eth0", "address", NAMED_MAC]);
    writeFileSync(join(dir, "udhcpc.out"), "");
    lan.exec(h4.ns, "udhcpc", ["-i", "eth0", "-n", "-q", "-f", "-s", uscript]);
    assert.match(await waitForFile(join(dir, "udhcpc.out")), / from-rule\n?$/);
    const stages = serve.logs.map((l) => l.event);
    assert.ok(stages.includes("dhcp-offer") && stages.includes("dhcp-ack"));
  });

  it("atftp, tftp-hpa and curl fetch with and without options; traversal and writes are refused", async (t) => {
    if (!requireNetns(t)) return;
    for (const [cmd, pkg] of [
      ["atftp", "atftp"],
      ["tftp", "tftp-hpa"],
      ["curl", "curl"],
    ]) {
      if (!requireTool(t, cmd, pkg)) return;
    }
    const dir = tempDir(t);
    mkdirSync(join(dir, "tftp", "sub"), { recursive: true });
    const data = randomBytes(3 * 1024 * 1024 + 123);
    writeFileSync(join(dir, "tftp", "sub", "image.bin"), data);
    const exact = randomBytes(8192 * 4); // a multiple of the block size: ends with an empty block
    writeFileSync(join(dir, "tftp", "exact.bin"), exact);
    writeFileSync(join(dir, "secret.txt"), "outside the root");
    const lan = createLan(t);
    const serve = await startServe(lan, serveConfig(lan, dir));
    const host = lan.addHost(`${lan.prefix}.9`);
    const out = join(dir, "out");
    mkdirSync(out);
    const server = lan.serverAddress;
    const fetched = (name: string): Buffer => readFileSync(join(out, name));
    const sh = (cmd: string): string =>
      lan.exec(host.ns, "sh", ["-c", `${cmd} 2>&1; echo "exit=$?"`]);

    sh(`atftp --get -r sub/image.bin -l ${out}/a1 ${server}`);
    assert.deepEqual(fetched("a1"), data, "atftp, no options");
    sh(
      `atftp --option "blksize 1468" --option "tsize 0" --get -r sub/image.bin -l ${out}/a2 ${server}`,
    );
    assert.deepEqual(fetched("a2"), data, "atftp blksize + tsize");
    sh(
      `atftp --option "blksize 8192" --option "windowsize 16" --get -r /sub/image.bin -l ${out}/a3 ${server}`,
    );
    assert.deepEqual(fetched("a3"), data, "atftp windowsize 16");
    sh(`atftp --option "blksize 8192" --get -r exact.bin -l ${out}/a4 ${server}`);
    assert.deepEqual(fetched("a4"), exact, "a file of whole blocks");
    sh(`cd ${out} && tftp -m binary ${server} -c get sub/image.bin t1`);
    assert.deepEqual(fetched("t1"), data, "tftp-hpa");
    sh(`curl -s -o ${out}/c1 tftp://${server}/sub/image.bin`);
    assert.deepEqual(fetched("c1"), data, "curl (tsize)");
    sh(`curl -s --tftp-blksize 8192 -o ${out}/c2 tftp://${server}/sub/image.bin`);
    assert.deepEqual(fetched("c2"), data, "curl blksize 8192");
    sh(`curl -s --tftp-no-options -o ${out}/c3 tftp://${server}/exact.bin`);
    assert.deepEqual(fetched("c3"), exact, "curl without options");
    const ipxe = "/usr/lib/ipxe/undionly.kpxe";
    if (existsSync(ipxe)) {
      sh(`curl -s -o ${out}/c4 tftp://${server}/undionly.kpxe`);
      assert.deepEqual(fetched("c4"), readFileSync(ipxe), "iPXE first stage from the virtual tree");
      sh(`curl -s -o ${out}/c5 tftp://${server}/snponly.efi`);
      assert.deepEqual(fetched("c5"), readFileSync("/usr/lib/ipxe/snponly.efi"), "snponly.efi too");
    }

    const traversal = sh(`atftp --get -r ../secret.txt -l ${out}/x1 ${server}`);
    assert.match(traversal, /goes above its root/);
    assert.ok(!existsSync(join(out, "x1")) || readFileSync(join(out, "x1"), "utf8") === "");
    const hpa = sh(`cd ${out} && tftp -m binary ${server} -c get ../../secret.txt x2`);
    assert.match(hpa, /Error code 2|goes above/);
    const missing = sh(`curl -sS -o ${out}/x3 tftp://${server}/nope.bin`);
    assert.match(missing, /exit=68/, "curl reports TFTP file not found");
    const put = sh(`atftp --put -r up.bin -l ${out}/a1 ${server}`);
    assert.match(put, /read-only/);
    assert.ok(!existsSync(join(dir, "tftp", "up.bin")));
    // (lan.exec blocks this process: let the server's log lines in before counting.)
    await serve.waitFor(() => serve.logs.filter((l) => l.event === "tftp-done").length >= 8);
    const refused = serve.logs.filter((l) => l.event === "tftp-error").map((l) => String(l.detail));
    assert.ok(
      refused.some((d) => /goes above its root/.test(d)),
      refused.join("; "),
    );
  });
});
