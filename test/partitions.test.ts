// Partition tables read over a BlockDevice, against util-linux's sfdisk as the peer: GPT and MBR
// (with an extended chain of logical partitions) written by sfdisk and read back by it as JSON;
// and tables a hostile image could carry: too many entries, bad CRCs, a damaged primary GPT (the
// backup is used), a looping extended chain, a partition past the end.
import assert from "node:assert/strict";
import { openSync, readFileSync, writeSync, closeSync, truncateSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { crc32 } from "node:zlib";
import { FileDevice } from "../src/block/file-device.ts";
import { PartitionTableError, readPartitions } from "../src/disk/partitions.ts";
import { inetboot, inetbootOk, requireTool, run, runOk, tempDir } from "./helpers.ts";

interface SfdiskPart {
  node: string;
  start: number;
  size: number;
  type: string;
  uuid?: string;
  name?: string;
  bootable?: boolean;
}

async function sfdisk(
  image: string,
  script: string,
): Promise<{ label: string; id: string; partitions: SfdiskPart[] }> {
  const r = await run("sh", ["-c", `printf '%s' "$0" | sfdisk -q ${image}`, script]);
  assert.equal(r.code, 0, r.stderr);
  const json = JSON.parse((await runOk("sfdisk", ["--json", image])).stdout) as {
    partitiontable: { label: string; id: string; partitions: SfdiskPart[] };
  };
  return json.partitiontable;
}

async function table(image: string) {
  const dev = await FileDevice.open(image, { readOnly: true });
  try {
    return await readPartitions(dev);
  } finally {
    await dev.close();
  }
}

function image(dir: string, name: string, mb: number): string {
  const path = join(dir, name);
  closeSync(openSync(path, "w"));
  truncateSync(path, mb * 1024 * 1024);
  return path;
}

function patch(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, "r+");
  writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
}

it("GPT written by sfdisk: every partition's sectors, type, PARTUUID, name and the disk GUID as sfdisk reads them", async (t) => {
  if (!requireTool(t, "sfdisk", "fdisk")) return;
  const path = image(tempDir(t), "gpt.img", 64);
  const peer = await sfdisk(
    path,
    `label: gpt
size=8MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"
size=16MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root", attrs="LegacyBIOSBootable"
type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F
`,
  );
  const ours = await table(path);
  assert.equal(ours.scheme, "gpt");
  assert.equal(ours.diskId, peer.id.toLowerCase());
  assert.equal(ours.partitions.length, 3);
  peer.partitions.forEach((p, i) => {
    const o = ours.partitions[i];
    assert.equal(o.number, Number(/(\d+)$/.exec(p.node)?.[1]));
    assert.equal(o.offset, p.start * 512);
    assert.equal(o.size, p.size * 512);
    assert.equal(o.type, p.type.toLowerCase());
    assert.equal(o.partUuid, p.uuid?.toLowerCase());
    assert.equal(o.name, p.name);
  });
  assert.deepEqual(
    ours.partitions.map((p) => [p.typeName, p.bootable]),
    [
      ["EFI System", false],
      ["Linux filesystem", true],
      ["Linux swap", false],
    ],
  );
});

it("MBR written by sfdisk: primaries, the extended partition and its logical partitions (5, 6, …)", async (t) => {
  if (!requireTool(t, "sfdisk", "fdisk")) return;
  const path = image(tempDir(t), "mbr.img", 64);
  const peer = await sfdisk(
    path,
    `label: dos
label-id: 0x1234abcd
size=8MiB, type=ef, bootable
size=8MiB, type=83
type=5
size=4MiB, type=82
size=4MiB, type=83
type=83
`,
  );
  const ours = await table(path);
  assert.equal(ours.scheme, "mbr");
  assert.equal(ours.diskId, "1234abcd");
  assert.deepEqual(
    ours.partitions.map((p) => [p.number, p.offset / 512, p.size / 512, p.type, p.bootable]),
    peer.partitions.map((p) => [
      Number(/(\d+)$/.exec(p.node)?.[1]),
      p.start,
      p.size,
      `0x${p.type.padStart(2, "0")}`,
      p.bootable === true,
    ]),
  );
  assert.equal(ours.partitions.find((p) => p.number === 6)?.partUuid, "1234abcd-06");
});

it("hostile tables: a damaged primary GPT falls back to the backup; bad CRCs, huge counts, loops and partitions past the end are errors", async (t) => {
  if (!requireTool(t, "sfdisk", "fdisk")) return;
  const dir = tempDir(t);
  const gpt = image(dir, "gpt.img", 16);
  await sfdisk(gpt, "label: gpt\nsize=4MiB\nsize=4MiB\n");
  // The primary header's CRC broken: read from the backup, with a warning.
  patch(gpt, 512 + 16, Buffer.from([1, 2, 3, 4]));
  const fromBackup = await table(gpt);
  assert.equal(fromBackup.partitions.length, 2);
  assert.match(fromBackup.warnings.join(), /primary GPT is damaged \(header CRC mismatch\)/);
  // Both headers claim a million entries (CRCs fixed up, so only the count is wrong).
  const huge = (lba: number): void => {
    const h = Buffer.from(readFileSync(gpt).subarray(lba * 512, lba * 512 + 92));
    h.writeUInt32LE(1_000_000, 80);
    h.writeUInt32LE(0, 16);
    h.writeUInt32LE(crc32(h), 16);
    patch(gpt, lba * 512, h);
  };
  huge(1);
  huge(16 * 2048 - 1);
  await assert.rejects(
    table(gpt),
    (e: Error) => e instanceof PartitionTableError && /1000000 entries/.test(e.message),
  );

  // MBR: a logical partition's link pointing back at its own EBR.
  const mbr = image(dir, "mbr.img", 16);
  await sfdisk(mbr, "label: dos\ntype=5\nsize=2MiB, type=83\nsize=2MiB, type=83\n");
  const ext = readFileSync(mbr).readUInt32LE(446 + 8);
  const second = readFileSync(mbr).readUInt32LE(ext * 512 + 462 + 8);
  const link = Buffer.alloc(16); // the second EBR's link entry: an extended entry to itself
  link[4] = 0x05;
  link.writeUInt32LE(second, 8);
  link.writeUInt32LE(2048, 12);
  patch(mbr, (ext + second) * 512 + 462, link);
  await assert.rejects(table(mbr), /chain loops/);

  // A primary partition past the end of the image.
  const past = image(dir, "past.img", 1);
  const mbrSector = Buffer.alloc(512);
  mbrSector.writeUInt16LE(0xaa55, 510);
  mbrSector[446 + 4] = 0x83;
  mbrSector.writeUInt32LE(2048, 446 + 8);
  mbrSector.writeUInt32LE(0xffffffff, 446 + 12);
  patch(past, 0, mbrSector);
  await assert.rejects(table(past), /ends past the end of the image/);
  // No table at all.
  assert.equal((await table(image(dir, "blank.img", 1))).scheme, "none");
});

it("image inspect reads a signed release's partition table from a store (lazily), and a raw file's", async (t) => {
  if (!requireTool(t, "sfdisk", "fdisk")) return;
  const dir = tempDir(t);
  const path = image(dir, "disk.img", 48);
  const peer = await sfdisk(
    path,
    "label: gpt\nsize=8MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\nname=root\n",
  );
  const key = join(dir, "k");
  await inetbootOk(["keygen", "--out", key]);
  const store = join(dir, "store");
  await inetbootOk(["pack", path, "--store", store, "--name", "disk", "--key", key]);
  const r = await inetbootOk([
    ...["image", "inspect", "disk", "--store", store, "--trust", `${key}.pub`, "--json"],
  ]);
  const out = JSON.parse(r.stdout) as {
    scheme: string;
    partitions: { partUuid: string; offset: number; name?: string }[];
  };
  assert.equal(out.scheme, "gpt");
  assert.deepEqual(
    out.partitions.map((p) => [p.offset / 512, p.partUuid, p.name]),
    peer.partitions.map((p) => [p.start, p.uuid?.toLowerCase(), p.name]),
  );
  const text = (await inetbootOk(["image", "inspect", path])).stdout;
  assert.match(text, /GPT \(disk [0-9a-f-]{36}\)/);
  assert.match(text, /1 +EFI System +at 1\.00 MiB .*PARTUUID=[0-9a-f-]{36} "esp"/);
  // A name with a terminal escape is shown escaped, never sent to the terminal as is.
  const esc = image(dir, "esc.img", 16);
  await sfdisk(esc, 'label: gpt\nsize=4MiB, name="x\u001b[31my"\n');
  const shown = (await inetbootOk(["image", "inspect", esc])).stdout;
  assert.ok(!shown.includes("\u001b"), "no raw escape character");
  assert.match(shown, /"x\\u001b\[31my"/);
  const unsigned = await inetboot(["image", "inspect", "disk", "--store", store]);
  assert.notEqual(unsigned.code, 0, "a release is not read without a trusted key");
});
