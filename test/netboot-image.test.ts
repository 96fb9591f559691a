// End to end: QEMU network-boots a Debian root filesystem that inetboot serve streams from a
// signed image in a chunk store and exports over NBD (the host's Debian kernel and initrd with
// nbd-client's initramfs support: root=/dev/nbd0 nbdroot=SERVER,EXPORT,nbd0 ip=dhcp). A
// per-machine disk keeps what the first boot wrote; as a caching gateway in front of nginx
// mirrors, a tampered chunk is caught and failed over, a warm boot fetches nothing, and a boot
// with the origin gone works from the cache.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  cpSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { TestContext } from "node:test";
import { decodeProfile } from "../src/store/profile.ts";
import { decodeBlobIndex } from "../src/store/caibx.ts";
import { chunkFile } from "../src/store/layout.ts";
import {
  addPersistInit,
  debianTree,
  GUEST_HOSTNAME,
  hostKernel,
  packTree,
} from "./debian-rootfs.ts";
import {
  FixtureScope,
  inetbootOk,
  requireFile,
  requireTool,
  run,
  runOk,
  tempDir,
} from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { ServeProcess, TestLan } from "./netns.ts";
import { accessLogRequests, nginxConfig } from "./nginx.ts";
import { bootUntil, tapNic, uefiMachine } from "./qemu.ts";
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

/** The Debian image (minbase + a marker init counting boots), packed and signed. */
async function buildImage(fx: FixtureScope): Promise<Built | null> {
  if (!requireNetns(fx) || !requireTool(fx, "qemu-system-x86_64", "qemu-system-x86")) return null;
  if (!requireTool(fx, "mkfs.ext4", "e2fsprogs") || !requireTool(fx, "nginx", "nginx-light"))
    return null;
  const kit = hostKernel(fx);
  const shared = tempDir(fx, "inetboot-image-");
  const tree = kit && debianTree(fx, shared);
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
  options: { cmdline?: string; initrd?: string; nbdOverlay?: boolean; extra?: string } = {},
): string {
  const path = join(dir, "serve.yaml");
  writeFileSync(
    path,
    `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
http: { port: 8080 }
${options.extra ?? ""}
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

/** Boots QEMU on `tap` until `marker`; returns the console output and how long it took. */
async function timedBoot(
  lan: TestLan,
  tap: string,
  marker: RegExp,
  timeoutMs: number,
): Promise<{ out: string; seconds: number }> {
  const started = performance.now();
  const out = await bootUntil(qemuArgs(tap), marker, timeoutMs, {
    netns: lan.server,
    memoryMb: 1024,
  });
  return { out, seconds: (performance.now() - started) / 1000 };
}

// The image is built once (before) for all the tests; each describe below builds its own LAN and
// server once, and its tests run in order on it (each says what it relies on).
describe("Internet boot: root disks streamed from a chunk store", { timeout: 1_200_000 }, () => {
  const built = new FixtureScope();
  let b: Built;
  before(async () => {
    const made = await buildImage(built);
    if (made) b = made;
  });
  after(() => built.close());

  describe("a machine with a per-machine disk boots the Debian image over NBD", () => {
    const fx = new FixtureScope();
    const ready = (t: TestContext): boolean => built.ready(t) && fx.ready(t);
    let lan: TestLan;
    let tap: string;
    let serve: ServeProcess;
    let first: string;
    /** The second boot's console output (set by the second test). */
    let second: string | undefined;
    const boot = (): Promise<string> =>
      bootUntil(qemuArgs(tap), MARKER, 400_000, { netns: lan.server, memoryMb: 1024 });
    before(async () => {
      if (built.skipped !== null) return;
      const dir = tempDir(fx);
      lan = createLan(fx);
      tap = lan.addTap();
      const image = `{ name: debian, store: ${b.store}, trust: [${b.key}.pub] }`;
      serve = await startServe(lan, serveConfig(lan, dir, b, image, "per-machine"));
      first = await boot();
    });
    after(() => fx.close());

    it("the first boot's root is /dev/nbd0, ext4, read-write, exported by the server", (t) => {
      if (!ready(t)) return;
      assert.match(first, /INETBOOT-IMAGE-BOOT count=1 \/dev\/nbd0 \/ ext4 rw/);
      const stages = serve.logs.map((l) => l.event);
      assert.ok(stages.includes("nbd-export"), stages.join(","));
    });

    it("a second boot finds what the first wrote on its per-machine disk", async (t) => {
      if (!ready(t)) return;
      second = await boot();
      assert.match(
        second,
        /INETBOOT-IMAGE-BOOT count=2 /,
        "the overlay kept the first boot's write",
      );
    });

    // Relies on the second boot's output (the test above) for the export name.
    it("another host on the LAN neither lists nor opens the machine's export, even by its name", async (t) => {
      if (!ready(t) || !requireTool(t, "nbdinfo", "libnbd-bin")) return;
      assert.ok(second !== undefined, "the second boot (the test above) ran");
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
    });

    it("/api/images and the log show release 1 opened and its chunks read through the cache", (t) => {
      if (!ready(t)) return;
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
  });

  it("an initrd without nbd-client boots the image through inetboot's NBD overlay", async (t) => {
    if (!built.ready(t) || !requireTool(t, "unmkinitramfs", "initramfs-tools-core")) return;
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

  it("under UEFI Secure Boot (OVMF, Microsoft keys): shim → GRUB over TFTP boots the signed kernel with the image as its NBD root", async (t) => {
    if (!built.ready(t) || !requireFile(t, "/usr/lib/shim/shimx64.efi.signed", "shim-signed"))
      return;
    if (
      !requireFile(
        t,
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        "grub-efi-amd64-signed",
      )
    )
      return;
    const dir = tempDir(t);
    const fw = uefiMachine(dir, "x86_64", true);
    if (!fw.files.every((f) => requireFile(t, f, "ovmf"))) return;
    const lan = createLan(t);
    const tap = lan.addTap();
    const image = `{ name: debian, store: ${b.store}, trust: [${b.key}.pub] }`;
    const extra = "tftp: { enabled: true }\nloaders: { uefi-x86_64: shim }";
    const serve = await startServe(lan, serveConfig(lan, dir, b, image, "ephemeral", { extra }));
    const out = await bootUntil(
      [...fw.args, ...tapNic(tap, MAC, { romfile: "" })],
      MARKER,
      400_000,
      {
        netns: lan.server,
        memoryMb: 1024,
      },
    );
    assert.match(out, /secureboot: Secure boot enabled/, "the kernel booted under Secure Boot");
    assert.match(out, /INETBOOT-IMAGE-BOOT count=1 \/dev\/nbd0 \/ ext4 rw/);
    const stages = serve.logs.map(
      (l) => `${String(l.event)}:${typeof l.file === "string" ? l.file : ""}`,
    );
    for (const e of [
      "tftp-done:shimx64.efi",
      "tftp-done:grubx64.efi",
      "grub-plan:",
      "nbd-export:",
    ]) {
      assert.ok(stages.includes(e), `no ${e} in ${stages.join(", ")}`);
    }
  });

  describe("boot profiles", () => {
    const fx = new FixtureScope();
    let dir: string;
    /** The recorded profile (set by the first test). */
    let profile: string | undefined;
    before(() => {
      dir = tempDir(fx);
    });
    after(() => fx.close());

    it("profile record boots the image once in QEMU through the tracer: many regions, the superblock first", async (t) => {
      if (!built.ready(t)) return;
      const out = join(dir, "boot.profile");
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
        out,
      ]);
      assert.match(r.stdout, /Recorded the boot of debian@1/);
      const regions = decodeProfile(readFileSync(out, "utf8"));
      const covered = regions.reduce((n, e) => n + e.length, 0);
      assert.ok(
        regions.length > 20 && covered > 1e6,
        `${regions.length} regions, ${covered} bytes`,
      );
      // The first reads are the ext4 superblock area at the start of the disk.
      assert.ok(
        regions.slice(0, 5).some((e) => e.offset < 1 << 20),
        JSON.stringify(regions[0]),
      );
      profile = out;
    });

    // Relies on the profile recorded by the test above.
    it("optimize publishes the recorded profile as revision 2 with a boot pack", async (t) => {
      if (!built.ready(t)) return;
      assert.ok(profile !== undefined, "the profile was recorded (the test above)");
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
  });

  describe(`Internet boot behind a ${TEST_WAN.delayMs * 2} ms / ${TEST_WAN.rateMbit} Mbit/s WAN from two half-tampered mirrors: systemd to the login prompt`, () => {
    const fx = new FixtureScope();
    const ready = (t: TestContext): boolean => built.ready(t) && fx.ready(t);
    let dir: string;
    let web: string;
    let lan: TestLan;
    let tap: string;
    let nginx: ChildProcess;
    let nginxDir: string;
    let image: string;
    let serve: ServeProcess;
    /** Short ids (16 hex digits) of the chunks that some mirror serves tampered. */
    const tampered = new Set<string>();
    let cold: { out: string; seconds: number };
    /** Chunk files the origin served during the cold boot. */
    let coldChunks: number;
    /** The configuration with the boot pack (set by the boot-pack test). */
    let packConfig: string | undefined;

    const chunkGets = (): number =>
      accessLogRequests(join(nginxDir, "access.log")).filter((r) => r.path.includes(".cacnk"))
        .length;
    const api = (path: string): string =>
      lan.exec(lan.server, "curl", ["-sf", `http://127.0.0.1:8080${path}`]);
    /** Boots to the login prompt, checks it is Debian 12 and reports how long it took. */
    const boot = async (t: TestContext, what: string): Promise<void> => {
      const { out, seconds } = await timedBoot(lan, tap, LOGIN, 600_000);
      assert.match(out, /Debian GNU\/Linux 12/);
      t.diagnostic(`${what}: login prompt after ${seconds.toFixed(1)} s`);
    };

    before(async () => {
      if (built.skipped !== null) return;
      dir = tempDir(fx);
      // Two mirrors on one nginx in the server's namespace, each with half of the chunks
      // replaced by other chunks (valid zstd, wrong content: only the hash check can catch
      // them): A the even ones, B the odd ones. Whichever mirror a read goes to first, it may
      // meet a tampered chunk, and the other mirror has that chunk right. The origin sits
      // behind an emulated WAN link (20 ms each way, 50 Mbit/s), like a store across the
      // Internet.
      web = join(dir, "web");
      for (const m of ["a", "b"]) cpSync(b.store, join(web, m), { recursive: true });
      const indexes = join(web, "a", "indexes");
      const index = decodeBlobIndex(readFileSync(join(indexes, readdirSync(indexes)[0])));
      const ids = [...new Set(index.chunks.map((c) => c.id))];
      ids.forEach((id, i) => {
        const donor = ids[(i + 1) % ids.length];
        copyFileSync(
          join(b.store, "chunks", chunkFile(donor)),
          join(web, i % 2 === 0 ? "a" : "b", "chunks", chunkFile(id)),
        );
        tampered.add(id.slice(0, 16));
      });

      lan = createLan(fx);
      tap = lan.addTap();
      nginxDir = join(dir, "nginx");
      mkdirSync(nginxDir);
      nginx = lan.spawn(lan.server, "/usr/sbin/nginx", [
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
      image = `{ name: debian, store: [${origin}/a, ${origin}/b], trust: [${b.key}.pub] }`;
      serve = await startServe(
        lan,
        serveConfig(lan, dir, b, image, "ephemeral", { cmdline: SYSTEMD_CMDLINE }),
      );
      cold = await timedBoot(lan, tap, LOGIN, 600_000);
      coldChunks = chunkGets();
    });
    after(() => fx.close());

    it("a cold boot over the WAN reaches the login prompt of Debian 12", (t) => {
      if (!ready(t)) return;
      assert.match(cold.out, /Debian GNU\/Linux 12/);
      t.diagnostic(
        `cold boot over the WAN (${TEST_WAN.delayMs * 2} ms RTT, ${TEST_WAN.rateMbit} Mbit/s): login prompt after ${cold.seconds.toFixed(1)} s`,
      );
    });

    it("a tampered chunk is caught by its hash and the read fails over to the other mirror", (t) => {
      if (!ready(t)) return;
      const failovers = serve.logs
        .filter((l) => l.msg === "mirror failed; failing over")
        .map((l) => String(l.err));
      assert.ok(
        failovers.some((e) => tampered.has(/[0-9a-f]{64}/.exec(e)?.[0].slice(0, 16) ?? "")),
        `a tampered chunk was caught: ${failovers.slice(0, 3).join("; ")}`,
      );
    });

    it("the cold boot keeps the release in the cache and fetches its chunks from the origin", (t) => {
      if (!ready(t)) return;
      assert.ok(!serve.logs.some((l) => l.msg === "cannot keep the release in the cache"));
      assert.ok(coldChunks > 10, `cold boot fetched ${coldChunks} chunks`);
    });

    it("the server traced the cold boot: /api/images reports the bytes read and the occupancy", (t) => {
      if (!ready(t)) return;
      const [traced] = JSON.parse(api("/api/images")) as {
        readBytes: number;
        fetchedBytes: number;
        occupancy: number;
      }[];
      assert.ok(traced.readBytes > 1e6, JSON.stringify(traced));
      assert.ok(traced.occupancy > 0.3 && traced.occupancy <= 1, JSON.stringify(traced));
    });

    // The server traced the cold boot: its profile, published with a boot pack as revision 2
    // (same disk), lets the next cold boot fetch its boot set with a few large Range requests.
    // Restarts the server with a fresh state folder; the tests after this one rely on it.
    it("with the traced profile published as a boot pack (revision 2), a cold boot fetches its boot set by Range requests and few chunks besides", async (t) => {
      if (!ready(t)) return;
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
      const config = serveConfig(lan, packDir, b, image, "ephemeral", {
        cmdline: SYSTEMD_CMDLINE,
      });
      serve = await startServe(lan, config);
      packConfig = config;
      const packGets = (): number =>
        accessLogRequests(join(nginxDir, "access.log")).filter(
          (r) => r.path.includes("/packs/") && r.status === 206,
        ).length;
      const beforePack = chunkGets();
      await boot(t, "cold boot with the boot pack (revision 2)");
      const downloaded = await serve.waitFor((l) => l.msg === "boot pack downloaded");
      assert.ok(Number(downloaded.delivered) > 10, JSON.stringify(downloaded));
      assert.ok(packGets() >= 2, `${packGets()} Range requests of the pack`);
      const stray = chunkGets() - beforePack;
      t.diagnostic(
        `boot pack: ${String(downloaded.delivered)} chunks in ${String(downloaded.requests)} requests; ${stray} chunks outside it (cold boot without: ${coldChunks})`,
      );
      assert.ok(
        stray < coldChunks / 2,
        `${stray} chunk files read besides the pack (cold: ${coldChunks})`,
      );
    });

    // Relies on the boot-pack test: the same server, which has just booted the machine.
    it("a warm boot fetches no chunk from the origin", async (t) => {
      if (!ready(t)) return;
      assert.ok(packConfig !== undefined, "the boot-pack test ran");
      const warmFrom = chunkGets();
      await boot(t, "warm boot");
      assert.equal(chunkGets(), warmFrom, "a warm boot fetches no chunk from the origin");
    });

    // Relies on the boot-pack test: its server's state folder keeps the release and boot set.
    it("with the origin gone, a restarted server boots the machine from the release kept in its cache", async (t) => {
      if (!ready(t)) return;
      assert.ok(packConfig !== undefined, "the boot-pack test ran");
      nginx.kill("SIGTERM");
      await new Promise((r) => nginx.once("exit", r));
      serve.child.kill("SIGTERM");
      await new Promise((r) => serve.child.once("exit", r));
      serve = await startServe(lan, packConfig);
      await boot(t, "boot with the origin stopped");
      assert.ok(
        serve.logs.some(
          (l) => l.msg === "the store cannot be reached; using the release kept in the cache",
        ),
        "used the cached release",
      );
    });
  });
});
