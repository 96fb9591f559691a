// Real NBD clients against `inetboot attach`: nbdinfo, nbdcopy, qemu-img, qemu-io, nbdfuse.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import * as P from "../src/nbd/protocol.ts";
import { startAttach } from "./attach.ts";
import { inetbootOk, requireOrSkip, requireTool, run, tempDir, textLike } from "./helpers.ts";
import { TestNbdClient } from "./nbd-client.ts";
import { startNginx } from "./nginx.ts";

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(" ")} failed (${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A packed, signed image whose size is a multiple of 512 (qemu rounds others up). */
async function packedImage(
  t: TestContext,
): Promise<{ dir: string; store: string; data: Buffer; pub: string; state: string }> {
  const dir = tempDir(t);
  const data = Buffer.concat([
    textLike(1_500_000, 11),
    Buffer.alloc(2_000_000),
    randomBytes(700_000),
    Buffer.alloc(300_000),
  ]);
  const padded = Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
  writeFileSync(join(dir, "disk.img"), padded);
  const store = join(dir, "store");
  await inetbootOk(["keygen", "--out", join(dir, "k")]);
  await inetbootOk([
    "pack",
    join(dir, "disk.img"),
    "--store",
    store,
    "--name",
    "disk",
    "--key",
    join(dir, "k"),
  ]);
  return { dir, store, data: padded, pub: join(dir, "k.pub"), state: join(dir, "state.json") };
}

describe("real NBD clients", () => {
  it("nbdinfo sees the size, the export list and the holes; nbdcopy and qemu-img copy byte-exact", async (t) => {
    if (!requireTool(t, "nbdinfo", "libnbd-bin") || !requireTool(t, "qemu-img", "qemu-utils"))
      return;
    const img = await packedImage(t);
    const nginx = await startNginx(t, img.dir);
    if (!nginx) return;
    const sock = join(img.dir, "nbd.sock");
    const a = await startAttach(t, [
      "disk",
      "--store",
      `${nginx.url}store`,
      "--trust",
      img.pub,
      "--state",
      img.state,
      "--listen",
      `unix:${sock}`,
      "--export",
      "disk",
    ]);
    assert.equal(a.uri, `nbd+unix:///disk?socket=${sock}`);

    const info = JSON.parse(await ok("nbdinfo", ["--json", a.uri])) as {
      exports: { "export-size": number; is_read_only: boolean; can_multi_conn: boolean }[];
    };
    assert.equal(info.exports[0]["export-size"], img.data.length);
    assert.equal(info.exports[0].is_read_only, true);
    assert.equal(info.exports[0].can_multi_conn, true);
    const list = JSON.parse(
      await ok("nbdinfo", ["--list", "--json", `nbd+unix:///?socket=${sock}`]),
    ) as { exports: { "export-name": string }[] };
    assert.deepEqual(
      list.exports.map((e) => e["export-name"]),
      ["disk"],
    );
    const map = JSON.parse(await ok("nbdinfo", ["--map", "--json", a.uri])) as {
      offset: number;
      length: number;
      type: number;
    }[];
    const holes = map.filter((e) => (e.type & 1) === 1);
    assert.ok(holes.length > 0, "the zero regions show as holes");
    for (const h of holes)
      assert.ok(img.data.subarray(h.offset, h.offset + h.length).every((b) => b === 0));
    assert.equal(
      map.reduce((n, e) => n + e.length, 0),
      img.data.length,
    );

    await ok("nbdcopy", [a.uri, join(img.dir, "nbdcopy.out")]);
    assert.ok(
      readFileSync(join(img.dir, "nbdcopy.out")).equals(img.data),
      "nbdcopy output differs",
    );
    await ok("qemu-img", ["convert", "-f", "raw", "-O", "raw", a.uri, join(img.dir, "qemu.out")]);
    assert.ok(readFileSync(join(img.dir, "qemu.out")).equals(img.data), "qemu-img output differs");
    assert.equal(await a.stop(), 0);
  });

  it("through the cache's unpacked copy: nbdcopy and qemu-img copy byte-exact cold, warm and after a restart; a damaged unpacked chunk is fetched again", async (t) => {
    if (!requireTool(t, "nbdcopy", "libnbd-bin") || !requireTool(t, "qemu-img", "qemu-utils"))
      return;
    const img = await packedImage(t);
    const sock = join(img.dir, "nbd.sock");
    const cache = join(img.dir, "cache");
    const args = [
      ...["disk", "--store", img.store, "--trust", img.pub, "--state", img.state],
      ...["--cache", cache, "--listen", `unix:${sock}`],
    ];
    const copyBoth = async (uri: string, what: string): Promise<void> => {
      await ok("nbdcopy", [uri, join(img.dir, "nbdcopy.out")]);
      assert.ok(readFileSync(join(img.dir, "nbdcopy.out")).equals(img.data), `nbdcopy, ${what}`);
      await ok("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, join(img.dir, "q.out")]);
      assert.ok(readFileSync(join(img.dir, "q.out")).equals(img.data), `qemu-img, ${what}`);
    };
    const a = await startAttach(t, args);
    await copyBoth(a.uri, "cold");
    await copyBoth(a.uri, "warm");
    // Warm 4 KiB reads, each answered at once (no promise, no budget wait)...
    await ok("nbdcopy", ["--request-size=4096", a.uri, join(img.dir, "small.out")]);
    assert.ok(readFileSync(join(img.dir, "small.out")).equals(img.data), "nbdcopy, 4 KiB reads");
    // ...are still bounded by what the client leaves unread: 1.25 GiB asked, never read.
    const greedy = await TestNbdClient.connect(sock);
    greedy.socket.pause();
    for (let i = 0; i < 20_000; i++)
      void greedy.request(P.NBD_CMD_READ, (i % 64) << 16, 1 << 16).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1500));
    const rss = Number(
      /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${a.child.pid}/status`, "utf8"))![1],
    );
    greedy.close();
    assert.ok(rss < 300 * 1024, `the server's RSS reached ${rss} KiB`);
    assert.equal(await a.stop(), 0);
    // Damage the first non-zero byte the unpacked copy holds.
    const [folder] = readdirSync(join(cache, "unpacked"));
    const dataPath = join(cache, "unpacked", folder, "data");
    const bytes = readFileSync(dataPath);
    const at = bytes.findIndex((b) => b !== 0);
    assert.ok(at >= 0, "the unpacked copy holds data");
    bytes[at] ^= 0xff;
    writeFileSync(dataPath, bytes);
    const b = await startAttach(t, args);
    await copyBoth(b.uri, "after a restart, one chunk damaged");
    assert.equal(await b.stop(), 0);
    assert.match(b.stderr(), /does not match its ID; fetching it again/);
  });

  it("qemu-io writes through a copy-on-write export; they persist, the base stays unchanged", async (t) => {
    if (!requireTool(t, "qemu-io", "qemu-utils")) return;
    const img = await packedImage(t);
    const sock = join(img.dir, "nbd.sock");
    const cow = join(img.dir, "disk.cow");
    const args = [
      "disk",
      "--store",
      img.store,
      "--trust",
      img.pub,
      "--state",
      img.state,
      "--cow",
      cow,
      "--listen",
      `unix:${sock}`,
    ];
    const a = await startAttach(t, args);
    const writes = [
      ["0xab", 4096, 8192],
      ["0xcd", 1_000_001, 70_000],
      ["0x11", 3_600_000, 512],
    ] as const;
    const cmds = writes.flatMap(([p, off, len]) => ["-c", `write -P ${p} ${off} ${len}`]);
    // Random writes, then a flush.
    await ok("qemu-io", ["-f", "raw", ...cmds, "-c", "flush", a.uri]);
    const reads = writes.flatMap(([p, off, len]) => ["-c", `read -P ${p} ${off} ${len}`]);
    const out1 = await ok("qemu-io", ["-f", "raw", "-r", ...reads, a.uri]);
    assert.doesNotMatch(out1, /failed|mismatch/i);
    // Bytes around the writes still come from the base.
    const around = await ok("qemu-io", ["-f", "raw", "-r", "-c", `read -v 4090 6`, a.uri]);
    assert.match(around, /00000ffa:\s+([0-9a-f]{2} ){6}/);
    await a.stop();

    const b = await startAttach(t, args);
    const out2 = await ok("qemu-io", ["-f", "raw", "-r", ...reads, b.uri]);
    assert.doesNotMatch(out2, /failed|mismatch/i, "writes did not survive a restart");
    await ok("nbdcopy", [b.uri, join(img.dir, "after.img")]);
    const expect = Buffer.from(img.data);
    for (const [p, off, len] of writes) expect.fill(Number(p), off, off + len);
    assert.ok(
      readFileSync(join(img.dir, "after.img")).equals(expect),
      "the disk is not base + writes",
    );
    await b.stop();

    // The base release is untouched: the store verifies and extracts to the original bytes.
    await inetbootOk(["verify", "--store", img.store]);
    await inetbootOk([
      "extract",
      "disk",
      join(img.dir, "base.img"),
      "--store",
      img.store,
      "--trust",
      img.pub,
      "--state",
      img.state,
    ]);
    assert.ok(readFileSync(join(img.dir, "base.img")).equals(img.data));
  });

  it("nbdfuse exposes the export as a file and the ext4 inside mounts read-only", async (t) => {
    if (process.getuid?.() !== 0) {
      requireOrSkip(t, "needs root for mount -o loop");
      return;
    }
    if (!requireTool(t, "nbdfuse", "nbdfuse") || !requireTool(t, "mkfs.ext4", "e2fsprogs")) return;
    const dir = tempDir(t);
    const tree = join(dir, "tree");
    mkdirSync(join(tree, "etc"), { recursive: true });
    writeFileSync(join(tree, "etc", "marker"), "inetboot was here\n");
    writeFileSync(join(tree, "big.bin"), textLike(3_000_000, 5));
    await ok("mkfs.ext4", ["-q", "-F", "-d", tree, join(dir, "fs.img"), "32M"]);
    await inetbootOk(["pack", join(dir, "fs.img"), "--store", join(dir, "store"), "--name", "fs"]);
    const sock = join(dir, "nbd.sock");
    const a = await startAttach(t, [
      "fs",
      "--store",
      join(dir, "store"),
      "--insecure",
      "--state",
      join(dir, "s.json"),
      "--listen",
      `unix:${sock}`,
    ]);
    const fuseDir = join(dir, "fuse");
    const mnt = join(dir, "mnt");
    mkdirSync(fuseDir);
    mkdirSync(mnt);
    // nbdfuse runs in the foreground by default; it exits when unmounted. Everything is
    // unmounted here, before the temporary folder is removed.
    const fuse = spawn("nbdfuse", ["-r", fuseDir, a.uri], { stdio: "ignore" });
    try {
      for (let i = 0; i < 100; i++) {
        if ((await run("sh", ["-c", `test -s ${fuseDir}/nbd`])).code === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await ok("mount", ["-o", "loop,ro", join(fuseDir, "nbd"), mnt]);
      try {
        assert.equal(readFileSync(join(mnt, "etc", "marker"), "utf8"), "inetboot was here\n");
        assert.ok(readFileSync(join(mnt, "big.bin")).equals(textLike(3_000_000, 5)));
      } finally {
        await run("umount", [mnt]);
      }
    } finally {
      await run("umount", [fuseDir]);
      fuse.kill();
    }
    await a.stop();
  });
});
