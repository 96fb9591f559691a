// `inetboot run`, end to end in QEMU (TCG): the Debian image streamed from nginx boots to its
// marker through a private NBD export with a growing disk file; the second run fetches no
// chunk and sees what the first wrote; --offline boots from the cache alone (origin stopped) and
// says what is missing when the cache cannot boot. A live ISO by URL boots through its recipe,
// the guest fetching the ISO from inetboot's local HTTP server; re-run offline. --console on a
// real terminal (a pty made by script(1)): keys reach the guest, Ctrl-] stops the VM.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  addPersistInit,
  debianTree,
  hostKernel,
  packTree,
  PERSIST_MARKER,
} from "./debian-rootfs.ts";
import { gpgKey, requireGpg } from "./gpg.ts";
import { CLI, inetboot, requireFile, requireTool, tempDir } from "./helpers.ts";
import { makeIso } from "./iso-maker.ts";
import { busyboxStatic, markerInitrd, networkMarkerInitrd } from "./marker-initrd.ts";
import { accessLogRequests, startNginxProcess } from "./nginx.ts";

const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

describe("inetboot run", { timeout: 900_000 }, () => {
  it("boots the Debian image from nginx with a growing disk file; a re-run fetches nothing; --offline boots from the cache", async (t) => {
    if (!requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(t, "mkfs.ext4", "e2fsprogs") || !requireTool(t, "nginx", "nginx-light"))
      return;
    const kit = hostKernel(t);
    const dir = tempDir(t);
    const tree = kit && debianTree(t, dir);
    if (!kit || !tree) return;
    addPersistInit(tree);
    const { store, key } = await packTree(tree, dir, "debian");
    const nginx = await startNginxProcess(store, tempDir(t, "inetboot-nginx-"));
    t.after(() => nginx.stop());
    const cache = join(dir, "cache");
    const disk = join(dir, "vm.cow");
    const run = (extra: string[]): ReturnType<typeof inetboot> =>
      inetboot([
        "run",
        "debian",
        "--cache",
        cache,
        "--disk",
        disk,
        "--trust",
        `${key}.pub`,
        "--state",
        join(dir, "state.json"),
        "--kernel",
        kit.kernel,
        "--initrd",
        kit.initrd,
        "--cmdline",
        "console=ttyS0 init=/inetboot-persist panic=-1",
        "--until",
        PERSIST_MARKER.source,
        "--timeout",
        "400",
        "--accel",
        "tcg",
        ...extra,
      ]);
    const chunkRequests = (): number =>
      accessLogRequests(nginx.accessLog).filter(
        (r) => r.path.includes("/chunks/") || r.path.includes("/packs/"),
      ).length;

    const first = await run(["--store", nginx.url]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /Ran debian@1 for [\d.]+ s/);
    assert.match(first.stdout, /console +INETBOOT-IMAGE-BOOT count=1 \/dev\/vda \/ ext4 rw/);
    assert.match(first.stdout, /network +[\d.]+ [KM]i?B fetched/);
    const fetchedFirst = chunkRequests();
    assert.ok(fetchedFirst > 0, "the first run fetched chunks from nginx");
    const onDisk = statSync(disk).blocks * 512;
    assert.ok(onDisk < 32 * 1024 * 1024, `disk file ${onDisk} bytes for a 1 GiB image`);
    assert.match(first.stdout, /disk file .*vm\.cow: .* on disk for a 1\.00 GiB image/);

    const second = await run(["--store", nginx.url]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(chunkRequests(), fetchedFirst, "the second run fetched no chunk");
    assert.match(second.stdout, /network +0 B fetched/);
    // What the first run wrote to its disk file is there: the boot counter went on.
    assert.match(second.stdout, /console +INETBOOT-IMAGE-BOOT count=2 /);
    assert.ok(statSync(disk).blocks * 512 < 32 * 1024 * 1024);

    nginx.stop();
    const offline = await run(["--offline", "--console"]);
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(
      offline.stdout,
      /INETBOOT-IMAGE-BOOT count=3 \/dev\/vda \/ ext4 rw/,
      offline.stdout.slice(-3000),
    );

    // Another cache that never saw the image: the error says what to do.
    const empty = await inetboot([
      "run",
      "debian",
      "--offline",
      "--cache",
      join(dir, "empty-cache"),
      "--trust",
      `${key}.pub`,
      "--kernel",
      kit.kernel,
    ]);
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /inetboot: .*debian/);
    assert.doesNotMatch(empty.stderr, /at .*\.ts:\d+/, "no stack trace");
  });

  it("boots a live ISO by URL through its recipe, checked against a signed SHA256SUMS; the guest fetches the ISO from inetboot; a re-run works offline", async (t) => {
    if (!requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(t, "nginx", "nginx-light") || !requireGpg(t)) return;
    const kit = hostKernel(t);
    const busybox = busyboxStatic(t);
    if (!kit || !busybox) return;
    const dir = tempDir(t);
    const initrd = networkMarkerInitrd(
      busybox,
      kit.kernel,
      "INETBOOT-RUN-ISO",
      `U=$(sed -n 's/.* url=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
wget -q -O /tmp/iso "$U" && echo "RUN-ISO sha256=$(sha256sum /tmp/iso | cut -d' ' -f1) END" || echo "RUN-ISO-FAILED $U"
`,
    );
    const iso = await makeIso(
      t,
      join(dir, "www"),
      { "casper/vmlinuz": readFileSync(kit.kernel), "casper/initrd": initrd },
      ["-R", "-J"],
      "live.iso",
    );
    if (!iso) return;
    const nginx = await startNginxProcess(join(dir, "www"), tempDir(t, "inetboot-nginx-"));
    t.after(() => nginx.stop());
    const run = (extra: string[]): ReturnType<typeof inetboot> =>
      inetboot([
        "run",
        `${nginx.url}live.iso`,
        "--cache",
        join(dir, "cache"),
        "--console",
        "--until",
        "RUN-ISO[^\\n]*(END|FAILED)",
        "--timeout",
        "300",
        // The guest here fetches the ISO by URL: the download recipe (lazy boots: netboot-live).
        "--download",
        ...extra,
      ]);
    // A wrong --sha256 stops before the VM starts, naming both hashes.
    const isoSha = sha256(readFileSync(iso));
    const wrong = await run(["--sha256", "0".repeat(64)]);
    assert.notEqual(wrong.code, 0);
    assert.ok(
      wrong.stderr.includes(`has SHA-256 ${isoSha}, not the ${"0".repeat(64)}`),
      wrong.stderr,
    );
    assert.doesNotMatch(wrong.stdout, /RUN-ISO/);
    // The right hash from the publisher's signed list (SHA256SUMS + detached signature).
    const publisher = gpgKey(t, "Test Publisher <cdimage@example.org>");
    writeFileSync(join(dir, "www", "SHA256SUMS"), `${isoSha} *live.iso\n`);
    publisher.detachSign(join(dir, "www", "SHA256SUMS"), join(dir, "www", "SHA256SUMS.gpg"));
    const signedList = [
      "--checksums",
      `${nginx.url}SHA256SUMS`,
      "--signature",
      `${nginx.url}SHA256SUMS.gpg`,
      "--keyring",
      publisher.exportTo(join(dir, "publisher.asc"), true),
    ];
    const disk = join(dir, "install.qcow2");
    const first = await run(["--disk", disk, "--disk-size", "8G", ...signedList]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(
      first.stderr,
      /"signer":"Test Publisher <cdimage@example\.org>.*checksum list signature verified/,
    );
    assert.match(first.stdout, new RegExp(`RUN-ISO sha256=${sha256(readFileSync(iso))} END`));
    // The guest got a growing disk to install to: 8G as it sees it, a few hundred KiB here.
    assert.match(first.stdout, /virtio_blk virtio\d+: \[vda\] 16777216 512-byte logical blocks/);
    assert.ok(statSync(disk).blocks * 512 < 4 * 1024 * 1024);
    assert.match(first.stdout, /recipe +casper: \/casper\/vmlinuz \/casper\/initrd/);
    assert.match(first.stdout, /url=http:\/\/10\.0\.2\.2:\d+\/iso\/live\.iso/);
    nginx.stop();
    const offline = await run(["--offline", ...signedList]); // the list kept in the cache
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stdout, new RegExp(`RUN-ISO sha256=${sha256(readFileSync(iso))} END`));
    assert.match(offline.stdout, /network +0 B fetched/);
  });

  it("boots an ISO no recipe knows (iPXE's own, ISOLINUX) as a CD-ROM over NBD, lazily, then offline", async (t) => {
    if (!requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(t, "nginx", "nginx-light")) return;
    if (!requireFile(t, "/usr/lib/ipxe/ipxe.iso", "ipxe")) return;
    const dir = tempDir(t);
    mkdirSync(join(dir, "www"));
    copyFileSync("/usr/lib/ipxe/ipxe.iso", join(dir, "www", "rescue.iso"));
    const nginx = await startNginxProcess(join(dir, "www"), tempDir(t, "inetboot-nginx-"));
    t.after(() => nginx.stop());
    const run = (extra: string[]): ReturnType<typeof inetboot> =>
      inetboot([
        "run",
        `${nginx.url}rescue.iso`,
        "--cache",
        join(dir, "cache"),
        "--memory",
        "256",
        "--until",
        "iPXE initialising devices",
        "--timeout",
        "120",
        ...extra,
      ]);
    const first = await run([]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /no live-system recipe fits .* booting it as a CD-ROM/);
    assert.match(first.stdout, /Ran .*rescue\.iso as a CD-ROM/);
    assert.match(first.stdout, /console +iPXE initialising devices/);
    const fetched = accessLogRequests(nginx.accessLog).filter((r) => r.path === "/rescue.iso");
    assert.ok(
      fetched.every((r) => r.status === 206),
      "Range requests only",
    );
    nginx.stop();
    const offline = await run(["--offline", "--cdrom"]);
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stdout, /console +iPXE initialising devices/);
    assert.match(offline.stdout, /network +0 B fetched/);
  });

  it("--console on a terminal: keys go to the guest raw, Ctrl-] stops the VM, the terminal is restored", async (t) => {
    if (!requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(t, "script", "bsdutils")) return;
    const kit = hostKernel(t);
    const busybox = busyboxStatic(t);
    if (!kit || !busybox) return;
    const dir = tempDir(t);
    const initrd = join(dir, "tty.cpio");
    writeFileSync(
      initrd,
      markerInitrd(
        busybox,
        "INETBOOT-TTY",
        `echo TYPE-A-LINE; read line; echo "GOT:[$line]"; sleep 600`,
      ),
    );
    const blank = join(dir, "blank.img");
    writeFileSync(blank, Buffer.alloc(1 << 20));
    const command = [
      process.execPath,
      CLI,
      "run",
      blank,
      "--cache",
      join(dir, "cache"),
      "--memory",
      "256",
      "--kernel",
      kit.kernel,
      "--initrd",
      initrd,
      "--cmdline",
      "'console=ttyS0 panic=-1'",
      "--console",
    ].join(" ");
    // script(1) runs the command on a new pty: stdin is a terminal, as for a user.
    const child = spawn(
      "script",
      [
        "-qefc",
        `${command} && echo "MODE:$(stty -a | tr ' ;' '\\n\\n' | grep -x -- '-*icanon')"`,
        "/dev/null",
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    t.after(() => child.kill("SIGKILL"));
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const waitFor = async (re: RegExp, what: string): Promise<void> => {
      for (let i = 0; i < 1200 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, re, `${what}:\n${out.slice(-2000)}`);
    };
    await waitFor(/TYPE-A-LINE/, "the guest did not ask for a line");
    await new Promise((r) => setTimeout(r, 300)); // the guest is in read
    child.stdin.write("hello world\r");
    await waitFor(/GOT:\[hello world\]/, "the typed line did not reach the guest");
    // Ctrl-] leaves; on a terminal not in raw mode it would wait in the line buffer.
    child.stdin.write("\x1d");
    const code = await Promise.race([
      exited,
      new Promise<string>((r) => setTimeout(() => r("still running"), 20_000)),
    ]);
    assert.equal(code, 0, out.slice(-2000));
    assert.match(out, /MODE:icanon/, "the terminal was left in raw mode");
  });
});
