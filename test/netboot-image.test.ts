// End to end: QEMU network-boots a Debian root filesystem that inetboot serve streams from a
// signed image in a chunk store and exports over NBD (the host's Debian kernel and initrd with
// nbd-client's initramfs support: root=/dev/nbd0 nbdroot=SERVER,EXPORT,nbd0 ip=dhcp). A
// per-machine disk keeps what the first boot wrote; as a caching gateway in front of nginx
// mirrors, a tampered chunk is caught and failed over, a warm boot fetches nothing, and a boot
// with the origin gone works from the cache.
import assert from "node:assert/strict";
import {
  copyFileSync,
  existsSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { TestContext } from "node:test";
import { decodeProfile } from "../src/block/profile.ts";
import { decodeBlobIndex } from "../src/store/caibx.ts";
import { chunkFile } from "../src/store/layout.ts";
import {
  addPersistInit,
  debianTree,
  GUEST_HOSTNAME,
  hostKernel,
  packTree,
} from "./debian-rootfs.ts";
import { inetbootOk, requireTool, run, runOk, tempDir } from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { TestLan } from "./netns.ts";
import { accessLogRequests, nginxConfig } from "./nginx.ts";
import { bootUntil, tapNic } from "./qemu.ts";
import { spawnWanProxy, TEST_WAN } from "./wan-proxy.ts";

const MAC = "52:54:00:12:34:77";

const MARKER = /INETBOOT-IMAGE-BOOT count=\d+ [^\n]*\n/;

interface Built {
  dir: string;
  store: string;
  key: string;
  kernel: string;
  initrd: string;
}

let built: Promise<Built | null> | null = null;
const shared = mkdtempSync(join(tmpdir(), "inetboot-image-"));
after(() => rmSync(shared, { recursive: true, force: true }));

/** The Debian image (minbase + a marker init counting boots), packed and signed, built once. */
function buildImage(t: TestContext): Promise<Built | null> {
  built ??= (async () => {
    if (!requireNetns(t) || !requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return null;
    if (!requireTool(t, "mkfs.ext4", "e2fsprogs") || !requireTool(t, "nginx", "nginx-light"))
      return null;
    const kit = hostKernel(t);
    const tree = kit && debianTree(t, shared);
    if (!kit || !tree) return null;
    addPersistInit(tree);
    const { image, store, key } = await packTree(tree, shared, "debian");
    rmSync(tree, { recursive: true, force: true });
    rmSync(image);
    return {
      dir: shared,
      store,
      key,
      kernel: kit.kernel,
      initrd: kit.initrd,
    };
  })();
  return built;
}

const PERSIST_CMDLINE = "console=ttyS0 init=/inetboot-persist panic=-1";
/** systemd all the way to the serial console's login prompt. */
const SYSTEMD_CMDLINE = "console=ttyS0 panic=-1";
const LOGIN = new RegExp(`${GUEST_HOSTNAME} login:`);

function serveConfig(
  lan: TestLan,
  dir: string,
  b: Built,
  image: string,
  disk: string,
  options: { cmdline?: string; initrd?: string; nbdOverlay?: boolean } = {},
): string {
  const path = join(dir, "serve.yaml");
  writeFileSync(
    path,
    `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
http: { port: 8080 }
state: ${dir}/state
entries:
  debian:
    image: ${image}
    kernel: ${b.kernel}
    initrd: [${options.initrd ?? b.initrd}]
    cmdline: ${options.cmdline ?? PERSIST_CMDLINE}
    disk: ${disk}
    nbd-overlay: ${options.nbdOverlay ?? false}
machines:
  - { match: { mac: "${MAC}" }, boot: debian }
`,
  );
  return path;
}

function qemuArgs(tap: string): string[] {
  return tapNic(tap, MAC);
}

describe("Internet boot: root disks streamed from a chunk store", { timeout: 1_200_000 }, () => {
  it("QEMU boots the Debian image over NBD; a per-machine disk keeps its writes", async (t) => {
    const b = await buildImage(t);
    if (!b) return;
    const dir = tempDir(t);
    const lan = createLan(t);
    const tap = lan.addTap();
    const image = `{ name: debian, store: ${b.store}, trust: [${b.key}.pub] }`;
    const serve = await startServe(lan, serveConfig(lan, dir, b, image, "per-machine"));
    const boot = (): Promise<string> =>
      bootUntil(qemuArgs(tap), MARKER, 400_000, { netns: lan.server, memoryMb: 1024 });
    assert.match(await boot(), /INETBOOT-IMAGE-BOOT count=1 \/dev\/nbd0 \/ ext4 rw/);
    const second = await boot();
    assert.match(second, /INETBOOT-IMAGE-BOOT count=2 /, "the overlay kept the first boot's write");
    const stages = serve.logs.map((l) => l.event);
    assert.ok(stages.includes("nbd-export"), stages.join(","));
    // Another host on the LAN neither sees nor opens this machine's disk.
    if (requireTool(t, "nbdinfo", "libnbd-bin")) {
      const other = lan.addHost(`${lan.prefix}.77`);
      const list = await run("ip", [
        "netns",
        "exec",
        other.ns,
        "nbdinfo",
        "--list",
        `nbd://${lan.serverAddress}`,
      ]);
      assert.doesNotMatch(list.stdout + list.stderr, /debian-52-54/);
      // Even knowing the machine's per-boot export name (its token, on its command line).
      const name = /nbdroot=\S+?\/(debian-52-54-00-12-34-77-[0-9a-f]{24})/.exec(second)?.[1];
      assert.ok(name, "the kernel printed its command line with the export name");
      const open = await run("ip", [
        "netns",
        "exec",
        other.ns,
        "nbdinfo",
        `nbd://${lan.serverAddress}/${name}`,
      ]);
      assert.notEqual(open.code, 0, "another host cannot open the machine's export");
      await serve.waitFor((l) => l.msg === "nbd export refused to this client");
    }
    const images = lan.exec(lan.server, "curl", ["-sf", "http://127.0.0.1:8080/api/images"]);
    const [stats] = JSON.parse(images) as {
      entry: string;
      image: string;
      cache: { misses: number };
    }[];
    assert.equal(stats.entry, "debian");
    assert.ok(stats.cache.misses > 0, "chunks came through the server's cache");
    assert.match(stats.image, /^debian@1/);
    const opened = serve.logs.find((l) => l.msg === "image opened");
    assert.match(String(opened?.image), /^debian@1/);
  });

  it("an initrd without nbd-client boots the image through inetboot's NBD overlay", async (t) => {
    const b = await buildImage(t);
    if (!b || !requireTool(t, "unmkinitramfs", "initramfs-tools-core")) return;
    const dir = tempDir(t);
    // The host's initrd with its NBD support taken out: no nbd-client, no local-top/nbd.
    const unpacked = join(dir, "initrd");
    await runOk("unmkinitramfs", [b.initrd, unpacked]);
    const main = existsSync(join(unpacked, "main")) ? join(unpacked, "main") : unpacked;
    for (const f of [
      "usr/sbin/nbd-client",
      "etc/modprobe.d/nbd-client.conf",
      "scripts/local-top/nbd",
    ])
      rmSync(join(main, f), { force: true });
    const order = join(main, "scripts/local-top/ORDER");
    if (existsSync(order)) {
      const kept = readFileSync(order, "utf8")
        .split("\n")
        .filter((l) => !l.includes("/nbd"));
      writeFileSync(order, kept.join("\n"));
    }
    const stripped = join(dir, "initrd-without-nbd.img");
    await runOk("sh", [
      "-c",
      `cd ${main} && find . | cpio -o -H newc --quiet | zstd -q -3 > ${stripped}`,
    ]);
    const listing = await runOk("lsinitramfs", [stripped]);
    assert.doesNotMatch(listing.stdout, /nbd-client|local-top\/nbd/);

    const lan = createLan(t);
    const tap = lan.addTap();
    const image = `{ name: debian, store: ${b.store}, trust: [${b.key}.pub] }`;
    await startServe(
      lan,
      serveConfig(lan, dir, b, image, "ephemeral", { initrd: stripped, nbdOverlay: true }),
    );
    const out = await bootUntil(qemuArgs(tap), MARKER, 400_000, {
      netns: lan.server,
      memoryMb: 1024,
    });
    assert.match(out, /inetboot: attaching debian-52-54-00-12-34-77/);
    assert.match(out, /INETBOOT-IMAGE-BOOT count=1 \/dev\/nbd0 \/ ext4 rw/);
  });

  it("profile record boots the image once in QEMU through the tracer; optimize publishes it", async (t) => {
    const b = await buildImage(t);
    if (!b) return;
    const dir = tempDir(t);
    const profile = join(dir, "boot.profile");
    const r = await inetbootOk([
      "profile",
      "record",
      "debian",
      "--store",
      b.store,
      "--trust",
      `${b.key}.pub`,
      "--kernel",
      b.kernel,
      "--initrd",
      b.initrd,
      "--cmdline",
      "console=ttyS0 init=/inetboot-persist panic=-1",
      "--until",
      "INETBOOT-IMAGE-BOOT count=1",
      "--timeout",
      "400",
      "--out",
      profile,
    ]);
    assert.match(r.stdout, /Recorded the boot of debian@1/);
    const regions = decodeProfile(readFileSync(profile, "utf8"));
    const covered = regions.reduce((n, e) => n + e.length, 0);
    assert.ok(regions.length > 20 && covered > 1e6, `${regions.length} regions, ${covered} bytes`);
    // The first reads are the ext4 superblock area at the start of the disk.
    assert.ok(
      regions.slice(0, 5).some((e) => e.offset < 1 << 20),
      JSON.stringify(regions[0]),
    );
    const published = join(dir, "store");
    cpSync(b.store, published, { recursive: true });
    const o = await inetbootOk([
      "optimize",
      "debian",
      "--profile",
      profile,
      "--store",
      published,
      "--json",
    ]);
    const result = JSON.parse(o.stdout) as { revision: number; pack: { chunks: number } };
    assert.equal(result.revision, 2);
    assert.ok(result.pack.chunks > 10);
  });

  it("Internet boot behind a 40 ms / 50 Mbit/s WAN: systemd to the login prompt; a tampered chunk fails over; a warm boot fetches nothing; the cache boots offline", async (t) => {
    const b = await buildImage(t);
    if (!b) return;
    const dir = tempDir(t);
    // Two mirrors on one nginx in the server's namespace, each with half of the chunks replaced
    // by other chunks (valid zstd, wrong content: only the hash check can catch them): A the
    // even ones, B the odd ones. Whichever mirror a read goes to first, it may meet a tampered
    // chunk, and the other mirror has that chunk right. The origin sits behind an emulated
    // WAN link (20 ms each way, 50 Mbit/s), like a store across the Internet.
    const web = join(dir, "web");
    for (const m of ["a", "b"]) cpSync(b.store, join(web, m), { recursive: true });
    const indexes = join(web, "a", "indexes");
    const index = decodeBlobIndex(readFileSync(join(indexes, readdirSync(indexes)[0])));
    const ids = [...new Set(index.chunks.map((c) => c.id))];
    const tampered = new Set<string>();
    ids.forEach((id, i) => {
      const donor = ids[(i + 1) % ids.length];
      copyFileSync(
        join(b.store, "chunks", chunkFile(donor)),
        join(web, i % 2 === 0 ? "a" : "b", "chunks", chunkFile(id)),
      );
      tampered.add(id.slice(0, 16));
    });

    const lan = createLan(t);
    const tap = lan.addTap();
    const nginxDir = join(dir, "nginx");
    mkdirSync(nginxDir);
    const nginx = lan.spawn(lan.server, "/usr/sbin/nginx", [
      "-c",
      nginxConfig(web, nginxDir, 8090),
      "-p",
      nginxDir,
    ]);
    await spawnWanProxy(
      (cmd, args) => lan.spawn(lan.server, cmd, args),
      "127.0.0.1:8091",
      "127.0.0.1:8090",
    );
    const origin = "http://127.0.0.1:8091";
    for (let i = 0; i < 100; i++) {
      try {
        lan.exec(lan.server, "curl", ["-sf", "-o", "/dev/null", `${origin}/b/`]);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const chunkGets = (): number =>
      accessLogRequests(join(nginxDir, "access.log")).filter((r) => r.path.includes(".cacnk"))
        .length;
    const image = `{ name: debian, store: [${origin}/a, ${origin}/b], trust: [${b.key}.pub] }`;
    let serve = await startServe(
      lan,
      serveConfig(lan, dir, b, image, "ephemeral", { cmdline: SYSTEMD_CMDLINE }),
    );
    const boot = async (what: string): Promise<void> => {
      const started = performance.now();
      const out = await bootUntil(qemuArgs(tap), LOGIN, 600_000, {
        netns: lan.server,
        memoryMb: 1024,
      });
      assert.match(out, /Debian GNU\/Linux 12/);
      t.diagnostic(
        `${what}: login prompt after ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
    };

    await boot(
      `cold boot over the WAN (${TEST_WAN.delayMs * 2} ms RTT, ${TEST_WAN.rateMbit} Mbit/s)`,
    );
    const failovers = serve.logs
      .filter((l) => l.msg === "mirror failed; failing over")
      .map((l) => String(l.err));
    assert.ok(
      failovers.some((e) => tampered.has(/[0-9a-f]{64}/.exec(e)?.[0].slice(0, 16) ?? "")),
      `a tampered chunk was caught: ${failovers.slice(0, 3).join("; ")}`,
    );
    assert.ok(!serve.logs.some((l) => l.msg === "cannot keep the release in the cache"));
    const cold = chunkGets();
    assert.ok(cold > 10, `cold boot fetched ${cold} chunks`);

    // The server traced that boot: its profile, published with a boot pack as revision 2 (same
    // disk), lets the next cold boot fetch its boot set with a few large Range requests.
    const api = (path: string): string =>
      lan.exec(lan.server, "curl", ["-sf", `http://127.0.0.1:8080${path}`]);
    const [traced] = JSON.parse(api("/api/images")) as {
      readBytes: number;
      fetchedBytes: number;
      occupancy: number;
    }[];
    assert.ok(traced.readBytes > 1e6, JSON.stringify(traced));
    assert.ok(traced.occupancy > 0.3 && traced.occupancy <= 1, JSON.stringify(traced));
    const profile = join(dir, "boot.profile");
    writeFileSync(profile, api("/api/images/debian/profile"));
    const published = join(dir, "published");
    cpSync(b.store, published, { recursive: true });
    await inetbootOk([
      "optimize",
      "debian",
      "--profile",
      profile,
      "--store",
      published,
      "--key",
      b.key,
    ]);
    for (const m of ["a", "b"]) {
      for (const sub of ["releases", "profiles", "packs"])
        cpSync(join(published, sub), join(web, m, sub), { recursive: true });
    }
    serve.child.kill("SIGTERM");
    await new Promise((r) => serve.child.once("exit", r));
    const packDir = join(dir, "pack");
    mkdirSync(packDir);
    const config = serveConfig(lan, packDir, b, image, "ephemeral", { cmdline: SYSTEMD_CMDLINE });
    serve = await startServe(lan, config);
    const packGets = (): number =>
      accessLogRequests(join(nginxDir, "access.log")).filter(
        (r) => r.path.includes("/packs/") && r.status === 206,
      ).length;
    const beforePack = chunkGets();
    await boot("cold boot with the boot pack (revision 2)");
    const downloaded = await serve.waitFor((l) => l.msg === "boot pack downloaded");
    assert.ok(Number(downloaded.delivered) > 10, JSON.stringify(downloaded));
    assert.ok(packGets() >= 2, `${packGets()} Range requests of the pack`);
    const stray = chunkGets() - beforePack;
    t.diagnostic(
      `boot pack: ${String(downloaded.delivered)} chunks in ${String(downloaded.requests)} requests; ${stray} chunks outside it (cold boot without: ${cold})`,
    );
    assert.ok(stray < cold / 2, `${stray} chunk files read besides the pack (cold: ${cold})`);
    const warmFrom = chunkGets();

    await boot("warm boot");
    assert.equal(chunkGets(), warmFrom, "a warm boot fetches no chunk from the origin");

    // The origin goes away and the server restarts: the release and the boot set come from the cache.
    nginx.kill("SIGTERM");
    await new Promise((r) => nginx.once("exit", r));
    serve.child.kill("SIGTERM");
    await new Promise((r) => serve.child.once("exit", r));
    serve = await startServe(lan, config);
    await boot("boot with the origin stopped");
    assert.ok(
      serve.logs.some(
        (l) => l.msg === "the store cannot be reached; using the release kept in the cache",
      ),
      "used the cached release",
    );
  });
});
