// End to end: a cloud-style disk image (GPT, EFI partition, ext4 root with Debian's own kernel
// and initramfs-tools initrd without nbd-client, grub.cfg, cloud-init; test/cloud-image.ts)
// converted to qcow2, packed from the qcow2, and network-booted in QEMU through iPXE from an
// `image` entry that names no kernel: inetboot takes the kernel, initrd and command line from
// the image, puts the root on its partition (/dev/nbd0p2) and adds its NBD overlay. cloud-init
// takes its NoCloud datasource from the server's templates: the host name and an SSH key. The
// per-machine disk keeps its instance-id across boots (cloud-init does not run its per-instance
// modules again); a disk reset gives a new one.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { TestContext } from "node:test";
import { buildCloudImage, CLOUD_MARKER } from "./cloud-image.ts";
import { ROOT_CHUNK_SIZE } from "./debian-rootfs.ts";
import { FixtureScope, inetboot, inetbootOk, requireTool, tempDir } from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { ServeProcess, TestLan } from "./netns.ts";
import { bootUntil, tapNic } from "./qemu.ts";

const MAC = "52:54:00:12:34:c1";
const HOST = "cloudy-17";
const TOKEN = "cloud-test-write-token";
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcW2qf3gp5yulZ9eEVF2Wvoet9+ouq8fVR7ADSD0GMP";
/** The report line, and the login prompt after (or before) it. */
const DONE = new RegExp(
  `${CLOUD_MARKER.source}[\\s\\S]*login:|login:[\\s\\S]*${CLOUD_MARKER.source}`,
);

interface Booted {
  out: string;
  host: string;
  iid: string;
  keys: string;
  runs: number;
  root: string;
}

describe(
  "a cloud image boots its own kernel over NBD, with cloud-init from the server",
  { timeout: 3_000_000 },
  () => {
    const fx = new FixtureScope();
    const ready = (t: TestContext): boolean => fx.ready(t);
    let lan: TestLan;
    let tap: string;
    let serve: ServeProcess;
    let version = "";
    let store = "";
    let key = "";
    let dir = "";
    const boots: Booted[] = [];

    const boot = async (): Promise<Booted> => {
      const out = await bootUntil(tapNic(tap, MAC), DONE, 900_000, {
        netns: lan.server,
        memoryMb: 1024,
      });
      const m = CLOUD_MARKER.exec(out);
      assert.ok(m, out.slice(-3000));
      return { out, host: m[1], iid: m[2], keys: m[3], runs: Number(m[4]), root: m[5] };
    };

    before(async () => {
      if (!requireNetns(fx) || !requireTool(fx, "qemu-system-x86_64", "qemu-system-x86")) return;
      if (!requireTool(fx, "nbd-client", "nbd-client")) return;
      dir = tempDir(fx, "inetboot-cloud-");
      const built = await buildCloudImage(fx, dir);
      if (!built) return;
      version = built.version;
      key = join(dir, "k");
      store = join(dir, "store");
      await inetbootOk(["keygen", "--out", key]);
      // Packed from the qcow2 (converted by qemu-img on the way).
      await inetbootOk([
        "pack",
        built.qcow2,
        "--store",
        store,
        "--name",
        "cloud",
        "--key",
        key,
        "--chunk-size",
        ROOT_CHUNK_SIZE,
      ]);
      writeFileSync(
        join(dir, "user-data"),
        `#cloud-config
# {{ entry }} for {{ mac }} at {{ ip }}
users:
  - default
ssh_authorized_keys:
  - ${KEY} inetboot@{{ hostname }}
runcmd:
  - [ sh, -c, 'echo {{ instance_id }} >> /var/lib/inetboot-runcmd' ]
`,
      );
      lan = createLan(fx);
      tap = lan.addTap();
      const config = join(dir, "serve.yaml");
      writeFileSync(
        config,
        `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
http: { port: 8080 }
ui: { write: true, token: ${TOKEN} }
state: ${dir}/state
entries:
  cloud:
    image: { name: cloud, store: ${store}, trust: [${key}.pub] }
    disk: per-machine
    cmdline: panic=-1
    cloud-init:
      user-data: user-data
machines:
  - { match: { mac: "${MAC}" }, boot: cloud, hostname: ${HOST} }
`,
      );
      serve = await startServe(lan, config);
      boots.push(await boot());
    });
    after(() => fx.close());

    it("boots the image's own kernel from its grub.cfg with the root on partition 2 through the overlay", (t) => {
      if (!ready(t)) return;
      const [b] = boots;
      assert.equal(b.root, "/dev/nbd0p2");
      assert.match(b.out, new RegExp(`Linux version ${version.replace(/\./g, "\\.")}`));
      assert.match(b.out, /Command line: .*boot=inetboot-nbd .*root=\/dev\/nbd0p2/);
      const copied = serve.logs.find((l) => l.msg === "image boot files copied out");
      assert.equal(copied?.kernel, `/boot/vmlinuz-${version}`);
      assert.equal(copied?.nbdClient, null, "the image's initrd has no nbd-client");
    });

    it("cloud-init applied the host name and the SSH key from the server's templates", (t) => {
      if (!ready(t)) return;
      const [b] = boots;
      assert.equal(b.host, HOST);
      assert.match(b.out, new RegExp(`${HOST} login:`));
      assert.equal(
        b.keys,
        `inetboot@${HOST},`,
        "the key (with its templated comment) is in authorized_keys",
      );
      assert.equal(b.runs, 1);
      const fetched = serve.logs.filter((l) => l.event === "cloud-init").map((l) => l.file);
      assert.ok(fetched.includes("meta-data") && fetched.includes("user-data"), fetched.join(","));
      const machines = JSON.parse(
        lan.exec(lan.server, "curl", ["-sf", "http://127.0.0.1:8080/api/machines"]),
      ) as {
        mac: string;
        cloudInit?: { instanceId: string; fetched: string[] };
      }[];
      const m = machines.find((x) => x.mac === MAC);
      assert.equal(m?.cloudInit?.instanceId, b.iid);
      // The dashboard: what the image boots, and the machine's instance-id.
      const images = lan.exec(lan.server, "curl", ["-sf", "http://127.0.0.1:8080/ui/images"]);
      assert.match(
        images,
        new RegExp(`Boots its own kernel\\s+<code>/boot/vmlinuz-${version}</code>`),
      );
      assert.match(images, /as <code>\/dev\/nbd0p2<\/code>; NBD by\s+inetboot&#39;s overlay/);
      const page = lan.exec(lan.server, "curl", [
        "-sf",
        `http://127.0.0.1:8080/ui/machines/${encodeURIComponent(MAC)}`,
      ]);
      assert.match(
        page,
        new RegExp(`instance-id\\s+<code>${b.iid}</code>; fetched\\s+meta-data, user-data`),
      );
    });

    it("a second boot of the per-machine disk keeps the instance-id: cloud-init does not run again", async (t) => {
      if (!ready(t)) return;
      const b = await boot();
      boots.push(b);
      assert.equal(b.iid, boots[0].iid);
      assert.equal(b.runs, 1, "runcmd ran once, on the first boot");
      assert.equal(b.host, HOST);
    });

    it("a disk reset gives the machine a new instance-id, and cloud-init runs on the fresh disk", async (t) => {
      if (!ready(t)) return;
      // The server is in the LAN's namespace: the dashboard's reset is asked from there.
      lan.exec(lan.server, "curl", [
        "-sf",
        "-o",
        "/dev/null",
        "-d",
        `entry=cloud&token=${TOKEN}`,
        `http://127.0.0.1:8080/ui/machines/${encodeURIComponent(MAC)}/reset-disk`,
      ]);
      const b = await boot();
      assert.notEqual(b.iid, boots[0].iid);
      assert.equal(b.runs, 1);
      assert.equal(b.host, HOST);
    });

    it("inetboot run boots the same image with the kernel taken from it (no --kernel)", async (t) => {
      if (!ready(t)) return;
      const r = await inetboot([
        "run",
        "cloud",
        "--store",
        store,
        "--trust",
        `${key}.pub`,
        "--cache",
        join(dir, "run-cache"),
        "--state",
        join(dir, "run-state.json"),
        "--until",
        "INETBOOT-CLOUD .* END",
        "--timeout",
        "900",
      ]);
      assert.equal(r.code, 0, r.stderr.slice(-3000));
      const kernel = `/boot/vmlinuz-${version}`;
      assert.ok(
        r.stderr.includes(
          `Booting the image's own kernel ${kernel} (/boot/grub/grub.cfg 'Debian GNU/Linux')`,
        ),
        r.stderr.slice(0, 2000),
      );
      const m = CLOUD_MARKER.exec(r.stdout + r.stderr);
      assert.ok(m, (r.stdout + r.stderr).slice(-3000));
      assert.equal(m[5], "/dev/vda2", "the root is the image's partition, by its PARTUUID");
    });
  },
);
