import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, it } from "node:test";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { writeCpio } from "./cpio.ts";
import { scanInitrd } from "./initrd-scan.ts";

const dir = mkdtempSync(join(tmpdir(), "inetboot-initrd-scan-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, data: Buffer): string => {
  const path = join(dir, name);
  writeFileSync(path, data);
  return path;
};

const microcode = (): Buffer =>
  writeCpio([
    { type: "dir", path: "kernel" },
    { type: "file", path: "kernel/x86/microcode/GenuineIntel.bin", data: Buffer.alloc(5000, 7) },
  ]);

const main = (nbd: boolean): Buffer =>
  writeCpio([
    { type: "dir", path: "scripts" },
    { type: "file", path: "scripts/local", data: "mountroot() { :; }\n" },
    { type: "file", path: "conf/initramfs.conf", data: "MODULES=most\n" },
    ...(nbd
      ? [{ type: "file" as const, path: "usr/sbin/nbd-client", data: Buffer.alloc(70_000, 1) }]
      : []),
  ]);

it("an initramfs-tools initrd: early microcode, then gzip or zstd; whether it has nbd-client", async () => {
  const gz = file("gz", Buffer.concat([microcode(), gzipSync(main(true))]));
  const { entries, ...rest } = await scanInitrd(gz);
  assert.ok(entries >= 6, `${entries} entries`);
  assert.deepEqual(rest, {
    archives: ["cpio", "gzip"],
    builder: "initramfs-tools",
    nbdClient: "usr/sbin/nbd-client",
  });
  const zst = file("zst", Buffer.concat([microcode(), zstdCompressSync(main(false))]));
  const facts = await scanInitrd(zst);
  assert.deepEqual(facts.archives, ["cpio", "zstd"]);
  assert.equal(facts.nbdClient, undefined);
});

it("xz through its tool; dracut's initrds are told apart", async (t) => {
  try {
    execFileSync("xz", ["--version"], { stdio: "ignore" });
  } catch {
    t.skip("xz is not installed");
    return;
  }
  const cpio = writeCpio([
    { type: "dir", path: "usr/lib/dracut" },
    { type: "file", path: "usr/lib/dracut/modules.txt", data: "nbd\n" },
    { type: "file", path: "sbin/nbd-client", data: "x" },
  ]);
  const xz = file("xz", execFileSync("xz", ["-c", "--check=crc32"], { input: cpio }));
  const { entries, ...rest } = await scanInitrd(xz);
  assert.ok(entries >= 3, `${entries} entries`);
  assert.deepEqual(rest, {
    archives: ["xz"],
    builder: "dracut",
    nbdClient: "sbin/nbd-client",
  });
});

it("hostile initrds: garbage, a bomb, and too many entries end in clear errors", async () => {
  await assert.rejects(
    scanInitrd(file("junk", Buffer.from("MZ this is not an initrd at all"))),
    /format this scan does not know/,
  );
  await assert.rejects(
    scanInitrd(file("notcpio", gzipSync(Buffer.alloc(4096, 0x41)))),
    /not a cpio newc archive/,
  );
  const bomb = writeCpio([{ type: "file", path: "zeros", data: Buffer.alloc(64 * 1024 * 1024) }]);
  await assert.rejects(
    scanInitrd(file("bomb", gzipSync(bomb)), { maxUnpacked: 1024 * 1024 }),
    /unpacks to over 1048576 bytes/,
  );
  const many = writeCpio(
    Array.from({ length: 3000 }, (_, i) => ({ type: "file" as const, path: `f${i}`, data: "" })),
  );
  await assert.rejects(
    scanInitrd(file("many", gzipSync(many)), { maxEntries: 1000 }),
    /over 1000 archive entries/,
  );
  await assert.rejects(
    scanInitrd(file("many-plain", many), { maxEntries: 1000 }),
    /over 1000 archive entries/,
  );
});
