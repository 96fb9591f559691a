// Per-machine files in process: an entry's cloud-init datasource and templated files (a
// preseed) reach the kernel command line as URLs, render with what the server knows of the
// machine (its rule's host name, MAC, address, labels), are served only to the address the
// machine booted from, and their mistakes are file:line problems at --check.
import assert from "node:assert/strict";
import { request } from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import type { TestContext } from "node:test";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { ConfigError } from "../src/serve/config/types.ts";
import { tempDir } from "./helpers.ts";

const MAC = "52:54:00:ab:cd:01";
const DASHED = MAC.replace(/:/g, "-");

function files(dir: string): void {
  writeFileSync(join(dir, "vmlinuz"), Buffer.alloc(1000, 1));
  writeFileSync(
    join(dir, "preseed.cfg"),
    "d-i netcfg/get_hostname string {{ hostname }}\nd-i preseed/early_command string echo {{ hostname | shell }} {{ label.rack }}\n# {{ mac }} {{ mac_dashes }} {{ ip }} {{ entry }} {{ server }}\n",
  );
  writeFileSync(join(dir, "user-data"), "#cloud-config\nhostname: {{ hostname | yaml }}\n");
}

const YAML = (dir: string): string => `entries:
  install:
    kernel: ${dir}/vmlinuz
    cmdline: auto=true priority=critical url={file-url:preseed.cfg}
    files: { preseed.cfg: ${dir}/preseed.cfg }
    cloud-init: { user-data: ${dir}/user-data }
machines:
  - { match: { mac: "${MAC}" }, boot: install, hostname: lab-01 }
default: install
`;

async function server(t: TestContext): Promise<{ base: string; dir: string; srv: BootServer }> {
  const dir = tempDir(t);
  files(dir);
  const config = parseConfig(
    `http: { port: 0, address: 127.0.0.1 }\nstate: ${dir}/state\n${YAML(dir)}`,
    join(dir, "serve.yaml"),
  );
  const srv = new BootServer(config);
  await srv.start();
  t.after(() => srv.stop());
  return { base: `http://127.0.0.1:${srv.httpPort}`, dir, srv };
}

/** A GET from a chosen loopback address. */
function get(url: string, localAddress = "127.0.0.1"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request(url, { localAddress }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on("error", reject)
      .end();
  });
}

it("templated files and cloud-init reach the command line and render per machine", async (t) => {
  const { base } = await server(t);
  const plan = await get(`${base}/ipxe/boot?mac=${DASHED}&rack=r7`);
  assert.equal(plan.status, 200);
  const files = `${base}/machine-files/install/${DASHED}`;
  assert.match(plan.body, new RegExp(`url=${files}/preseed\\.cfg`));
  assert.match(plan.body, new RegExp(`ds=nocloud-net;s=${base}/cloud-init/install/${DASHED}/`));

  const preseed = await get(`${files}/preseed.cfg`);
  assert.equal(preseed.status, 200);
  assert.equal(
    preseed.body,
    `d-i netcfg/get_hostname string lab-01\nd-i preseed/early_command string echo 'lab-01' r7\n# ${MAC} ${DASHED} 127.0.0.1 install ${base}\n`,
  );
  const ci = `${base}/cloud-init/install/${DASHED}`;
  const meta = await get(`${ci}/meta-data`);
  assert.match(meta.body, /^instance-id: "i-[0-9a-f]{16}"\nlocal-hostname: "lab-01"\n$/);
  assert.equal((await get(`${ci}/user-data`)).body, '#cloud-config\nhostname: "lab-01"\n');
  const vendor = await get(`${ci}/vendor-data`);
  assert.deepEqual(
    vendor,
    { status: 200, body: "" },
    "an empty vendor-data, not a 404 cloud-init retries",
  );
  assert.equal((await get(`${ci}/network-config`)).status, 200);

  const machines = (await (await fetch(`${base}/api/machines`)).json()) as {
    mac: string;
    cloudInit?: { instanceId: string; fetched: string[] };
  }[];
  const m = machines.find((x) => x.mac === MAC);
  assert.deepEqual(m?.cloudInit?.fetched, [
    "meta-data",
    "user-data",
    "vendor-data",
    "network-config",
  ]);
  assert.equal(`instance-id: "${m?.cloudInit?.instanceId}"\n`, meta.body.split("\n")[0] + "\n");
});

it("a machine's files go only to the address it booted from; unknown files and MACs are refused", async (t) => {
  const { base } = await server(t);
  const files = `${base}/machine-files/install/${DASHED}`;
  assert.equal(
    (await get(`${files}/preseed.cfg`)).status,
    403,
    "before its plan, nobody gets them",
  );
  await get(`${base}/ipxe/boot?mac=${DASHED}`);
  // Naming the MAC in a boot script or kernel request from elsewhere claims nothing.
  await get(`${base}/boot.ipxe?mac=${DASHED}`, "127.0.0.2");
  await get(`${base}/files/install/kernel?mac=${DASHED}`, "127.0.0.2");
  const other = await get(`${files}/preseed.cfg`, "127.0.0.2");
  assert.equal(other.status, 403);
  assert.match(other.body, /served only to the address it booted from/);
  assert.equal(
    (await get(`${base}/cloud-init/install/${DASHED}/user-data`, "127.0.0.2")).status,
    403,
  );
  assert.equal((await get(`${files}/nope.cfg`)).status, 404);
  assert.equal((await get(`${base}/cloud-init/install/${DASHED}/secrets`)).status, 404);
  assert.equal((await get(`${base}/machine-files/install/not-a-mac/preseed.cfg`)).status, 400);
  assert.equal((await get(`${base}/machine-files/nothing/${DASHED}/preseed.cfg`)).status, 404);
  const events = (await (await fetch(`${base}/api/events`)).json()) as {
    stage: string;
    ip?: string;
  }[];
  assert.ok(events.some((e) => e.stage === "machine-file-refused" && e.ip === "127.0.0.2"));
});

it("template mistakes are file:line problems at --check; {file-url:…} must name a file", (t) => {
  const dir = tempDir(t);
  files(dir);
  writeFileSync(
    join(dir, "bad-user-data"),
    "#cloud-config\nhostname: {{ host }}\nfqdn: {{ hostname | upper }}\n",
  );
  const yaml = `entries:
  install:
    kernel: ${dir}/vmlinuz
    cmdline: url={file-url:missing.cfg}
    files: { preseed.cfg: ${dir}/preseed.cfg, "../x": ${dir}/preseed.cfg }
    cloud-init: { user-data: ${dir}/bad-user-data, meta-data: ${dir}/gone }
  m: { menu: [install], cloud-init: { user-data: ${dir}/user-data } }
`;
  let problems: string[] = [];
  try {
    parseConfig(yaml, "serve.yaml");
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    problems = err.problems;
  }
  const text = problems.join("\n");
  assert.match(text, new RegExp(`${dir}/bad-user-data:2: unknown name "host"`));
  assert.match(text, new RegExp(`${dir}/bad-user-data:3: unknown filter "upper"`));
  assert.match(text, /cannot read template .*gone: ENOENT/);
  assert.match(
    text,
    /serve\.yaml:4: entries\.install\.cmdline: \{file-url:missing\.cfg\} names no file under files: \(preseed\.cfg\)/,
  );
  assert.match(text, /file name "\.\.\/x" must be/);
  assert.match(text, /entries\.m\.cloud-init: cloud-init is for kernel, image, iso entries/);
});
