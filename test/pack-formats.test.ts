// pack takes the disk images people have: qcow2 (compressed), VMDK and VHDX made by qemu-img
// from a raw disk are packed as that raw disk — extract gives back its bytes exactly — with no
// temporary file left behind; a damaged qcow2 is refused with qemu-img's reason.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import {
  inetboot,
  inetbootOk,
  requireTool,
  runOk,
  tempDir,
  textLike,
  writeImage,
} from "./helpers.ts";

it("qcow2, VMDK and VHDX are packed as the raw disk they hold; extract gives its bytes back", async (t) => {
  if (!requireTool(t, "qemu-img", "qemu-utils")) return;
  const dir = tempDir(t);
  const raw = join(dir, "disk.raw");
  const data = writeImage(raw, [textLike(3 << 20), { zero: 8 << 20 }, 1 << 20, { zero: 4 << 20 }]);
  const key = join(dir, "k");
  await inetbootOk(["keygen", "--out", key]);
  const store = join(dir, "store");
  for (const [format, extra] of [
    ["qcow2", ["-c"]],
    ["vmdk", []],
    ["vhdx", []],
  ] as const) {
    const image = join(dir, `disk.${format}`);
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", format, ...extra, raw, image]);
    const packed = JSON.parse(
      (
        await inetbootOk([
          "pack",
          image,
          "--store",
          store,
          "--name",
          format,
          "--key",
          key,
          "--json",
        ])
      ).stdout,
    ) as { size: number; convertedFrom?: string };
    assert.equal(packed.convertedFrom, format);
    assert.equal(packed.size, data.length, `${format}: the virtual disk's size`);
    const out = join(dir, `out-${format}.raw`);
    await inetbootOk(["extract", format, out, "--store", store, "--trust", `${key}.pub`]);
    assert.ok(readFileSync(out).equals(data), `${format}: byte-exact`);
  }
  assert.deepEqual(
    readdirSync(store).filter((f) => f.startsWith(".inetboot-convert")),
    [],
    "no converted copy is left",
  );
});

it("a damaged qcow2 is refused with qemu-img's reason", async (t) => {
  if (!requireTool(t, "qemu-img", "qemu-utils")) return;
  const dir = tempDir(t);
  const raw = join(dir, "disk.raw");
  writeImage(raw, [1 << 20]);
  const image = join(dir, "bad.qcow2");
  await runOk("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, image]);
  const bytes = readFileSync(image);
  bytes.writeUInt32BE(0x7fffffff, 20); // cluster_bits: far past what qcow2 allows
  writeFileSync(image, bytes);
  const r = await inetboot(["pack", image, "--store", join(dir, "store"), "--name", "bad"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /qemu-img cannot read .*bad\.qcow2/);
});
