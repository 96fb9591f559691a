// ext4 read over a BlockDevice region, against e2fsprogs as the peer: a filesystem made by
// mkfs.ext4 -d inside a GPT partition (-E offset), its files read back byte for byte as debugfs
// reads them — the kernel through Debian's /vmlinuz → boot/vmlinuz-… symlink, a sparse file
// whose extent tree has index nodes, a hashed directory of 3,000 names — and what a hostile
// image can do: symlink loops, damaged metadata (fuzzed), sizes past the bounds.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { FileDevice } from "../src/block/file-device.ts";
import { BufferDevice } from "../src/block/buffer-device.ts";
import { Ext4, Ext4Error } from "../src/disk/ext4.ts";
import { findImageBoot } from "../src/disk/image-boot.ts";
import { PartitionTableError, readPartitions } from "../src/disk/partitions.ts";
import { inetbootOk, requireTool, run, runOk, tempDir } from "./helpers.ts";

const KVER = "6.1.0-99-amd64";

async function makeDisk(dir: string): Promise<{ disk: string; files: Record<string, Buffer> }> {
  const tree = join(dir, "tree");
  mkdirSync(join(tree, "boot"), { recursive: true });
  mkdirSync(join(tree, "etc", "kernel"), { recursive: true });
  mkdirSync(join(tree, "many"));
  const files: Record<string, Buffer> = {
    [`/boot/vmlinuz-${KVER}`]: randomBytes(3 * 1024 * 1024 + 17),
    [`/boot/initrd.img-${KVER}`]: randomBytes(5 * 1024 * 1024 + 3),
    "/etc/kernel/cmdline": Buffer.from("root=UUID=x ro quiet\n"),
    "/etc/fstab": Buffer.from("UUID=x / ext4 defaults 0 1\n"),
  };
  for (const [p, data] of Object.entries(files)) writeFileSync(join(tree, p), data);
  symlinkSync(`boot/vmlinuz-${KVER}`, join(tree, "vmlinuz"));
  symlinkSync(`boot/initrd.img-${KVER}`, join(tree, "initrd.img"));
  symlinkSync(`../boot/initrd.img-${KVER}`, join(tree, "etc", "initrd"));
  symlinkSync("loop-b", join(tree, "loop-a"));
  symlinkSync("loop-a", join(tree, "loop-b"));
  for (let i = 0; i < 3000; i++) writeFileSync(join(tree, "many", `file-${i}`), `${i}\n`);
  // Sparse: 40 separate data runs, so the extent tree needs index nodes.
  const sparse = join(tree, "sparse.bin");
  const fd = openSync(sparse, "w");
  for (let i = 0; i < 40; i++) writeSync(fd, Buffer.alloc(4096, i + 1), 0, 4096, i * 65536);
  closeSync(fd);
  files["/sparse.bin"] = readFileSync(sparse);
  const disk = join(dir, "disk.img");
  closeSync(openSync(disk, "w"));
  truncateSync(disk, 96 * 1024 * 1024);
  await run("sh", ["-c", `printf 'label: gpt\\nsize=8MiB\\nname=root\\n' | sfdisk -q ${disk}`]);
  const offset = 9 * 1024 * 1024;
  await runOk("mkfs.ext4", [
    "-q",
    "-F",
    "-L",
    "rootfs",
    "-d",
    tree,
    "-E",
    `offset=${offset}`,
    disk,
    `${86 * 1024}k`,
  ]);
  return { disk, files };
}

it("ext4 in a GPT partition: files, symlinks, hashed directories and extent trees read as debugfs reads them", async (t) => {
  if (!requireTool(t, "sfdisk", "fdisk") || !requireTool(t, "debugfs", "e2fsprogs")) return;
  const dir = tempDir(t);
  const { disk, files } = await makeDisk(dir);
  const dev = await FileDevice.open(disk, { readOnly: true });
  t.after(() => dev.close());
  const [, root] = (await readPartitions(dev)).partitions;
  const fs = await Ext4.open(dev, root.offset, root.size);
  assert.ok(fs, "an ext4 filesystem in partition 2");
  assert.equal(fs.info.label, "rootfs");
  // The peer reads the same filesystem from its own copy of the partition.
  const part = join(dir, "part.img");
  await runOk("dd", [`if=${disk}`, `of=${part}`, "bs=1M", "skip=9", "count=86", "status=none"]);
  assert.match(
    (await runOk("debugfs", ["-R", "stats", part])).stdout,
    new RegExp(`UUID: +${fs.info.uuid}`),
  );
  for (const [path, data] of Object.entries(files)) {
    const inode = await fs.lookup(path);
    assert.ok(inode, path);
    const ours = await fs.read(inode);
    assert.ok(ours.equals(data), `${path}: our bytes`);
    const peer = join(dir, "peer.bin");
    await runOk("debugfs", ["-R", `dump ${path} ${peer}`, part]);
    assert.ok(readFileSync(peer).equals(ours), `${path}: as debugfs reads it`);
  }
  const kernel = await fs.lookup("/vmlinuz");
  assert.equal(kernel?.size, files[`/boot/vmlinuz-${KVER}`].length, "/vmlinuz → boot/vmlinuz-…");
  const link = await fs.lookup("/vmlinuz", false);
  assert.equal(link && (await fs.readlink(link)), `boot/vmlinuz-${KVER}`);
  assert.equal((await fs.lookup("/etc/initrd"))?.size, files[`/boot/initrd.img-${KVER}`].length);
  const many = await fs.lookup("/many");
  assert.equal((many && (await fs.list(many)))?.size, 3002, "3,000 names and . and ..");
  assert.equal(await fs.lookup("/boot/nope"), null);
  await assert.rejects(fs.lookup("/loop-a"), /too many symlinks/);
  await assert.rejects(fs.read(kernel, 1024), /over 1024/);
});

it("image inspect shows the partition's ext4 filesystem, its kernels and initrds (the defaults marked) and /etc/kernel/cmdline", async (t) => {
  if (!requireTool(t, "sfdisk", "fdisk")) return;
  const { disk } = await makeDisk(tempDir(t));
  const json = JSON.parse((await inetbootOk(["image", "inspect", disk, "--json"])).stdout) as {
    filesystems: {
      partition: number;
      type: string;
      label: string;
      boot: Record<string, unknown>;
    }[];
    boot: Record<string, unknown>;
    problems: string[];
  };
  assert.deepEqual(
    json.filesystems.map((f) => f.partition),
    [2],
    "partition 1 holds no filesystem",
  );
  const fs = json.filesystems[0];
  assert.equal(fs?.type, "ext4");
  assert.equal(fs?.label, "rootfs");
  assert.deepEqual(fs?.boot, {
    dir: "/boot",
    kernels: [`/boot/vmlinuz-${KVER}`],
    initrds: [`/boot/initrd.img-${KVER}`],
    defaultKernel: `/boot/vmlinuz-${KVER}`,
    defaultInitrd: `/boot/initrd.img-${KVER}`,
    cmdline: "root=UUID=x ro quiet",
  });
  // What inetboot boots: the /vmlinuz link's kernel with /etc/kernel/cmdline; root=UUID=x names
  // nothing here, so the root is the filesystem holding /etc/fstab, partition 2.
  assert.equal(json.boot.kernel, `/boot/vmlinuz-${KVER}`);
  assert.deepEqual(json.boot.initrds, [`/boot/initrd.img-${KVER}`]);
  assert.equal(json.boot.cmdline, "ro quiet");
  assert.equal(json.boot.nbdRoot, "/dev/nbd0p2");
  assert.equal(json.boot.from, "the /vmlinuz link with /etc/kernel/cmdline");
  assert.deepEqual(json.problems, ["root=UUID=x names no filesystem in the image"]);
  const text = (await inetbootOk(["image", "inspect", disk])).stdout;
  assert.match(text, new RegExp(`kernels +/boot/vmlinuz-${KVER} \\(default\\)`));
  assert.match(text, /^root +UUID=x, on the machine's NBD disk \/dev\/nbd0p2$/m);
  // The "initrd" here is random bytes: said, not guessed.
  assert.match(text, /^nbd +the initrd could not be read \(an archive at byte 0 is in a format/m);
});

it("ext4 from a hostile image: damaged metadata gives Ext4Error or a wrong file, never a crash, a hang or unbounded memory", async (t) => {
  if (!requireTool(t, "mkfs.ext4", "e2fsprogs")) return;
  const dir = tempDir(t);
  const tree = join(dir, "tree");
  mkdirSync(join(tree, "boot"), { recursive: true });
  writeFileSync(join(tree, "boot", `vmlinuz-${KVER}`), randomBytes(1024 * 1024));
  symlinkSync(`boot/vmlinuz-${KVER}`, join(tree, "vmlinuz"));
  mkdirSync(join(tree, "boot", "grub"));
  mkdirSync(join(tree, "etc"));
  writeFileSync(
    join(tree, "boot", "grub", "grub.cfg"),
    `menuentry 'x' {\n linux /boot/vmlinuz-${KVER} root=LABEL=r ro\n}\n`,
  );
  writeFileSync(join(tree, "etc", "fstab"), "LABEL=r / ext4 defaults 0 1\n");
  const image = join(dir, "small.img");
  await runOk("mkfs.ext4", ["-q", "-F", "-L", "r", "-d", tree, image, "8M"]);
  const whole = readFileSync(image);
  const found = await findImageBoot(new BufferDevice(whole));
  assert.equal(found.boot?.kernel.path, `/boot/vmlinuz-${KVER}`, "the undamaged one boots");
  let booted = 0;
  // Superblock, group descriptors, bitmaps, the inode table and the first directories.
  const meta = 384 * 1024;
  let errors = 0;
  const before = process.memoryUsage().rss;
  for (let round = 0; round < 300; round++) {
    const bytes = Buffer.from(whole);
    // Half the rounds hit the superblock's fields, the others anywhere in the metadata.
    const span = round % 2 ? 256 : meta - 1024;
    for (let k = 0; k < 8; k++) {
      bytes[1024 + Math.floor(Math.random() * span)] = Math.floor(Math.random() * 256);
    }
    try {
      const fs = await Ext4.open(new BufferDevice(bytes));
      const inode = await fs?.lookup("/vmlinuz");
      if (inode) await fs?.read(inode, 16 * 1024 * 1024);
      // What inetboot boots of it: found, or problems said; a damaged table or superblock is
      // an error of its own kind.
      if ((await findImageBoot(new BufferDevice(bytes))).boot) booted++;
    } catch (err) {
      if (!(err instanceof Ext4Error) && !(err instanceof PartitionTableError)) throw err;
      errors++;
    }
  }
  t.diagnostic(`${errors} of 300 damaged filesystems refused with Ext4Error; ${booted} still boot`);
  assert.ok(process.memoryUsage().rss - before < 512 * 1024 * 1024);
});
