// The ISO 9660 reader against ISOs made by xorriso (Rock Ridge, Joliet, El Torito for BIOS and
// UEFI), checked against isoinfo's listing; read locally and from nginx by Range requests; the
// distribution family recognised from each family's layout; damaged images give IsoFormatError.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { FileDevice } from "../src/block/file-device.ts";
import { HttpDevice } from "../src/block/http-device.ts";
import { BufferDevice } from "../src/block/buffer-device.ts";
import { BlockIoError } from "../src/block/block-device.ts";
import type { BlockDevice } from "../src/block/block-device.ts";
import { IsoFormatError, IsoImage } from "../src/iso/iso9660.ts";
import { detectRecipe } from "../src/iso/recipes.ts";
import {
  inetboot,
  inetbootOk,
  requireFile,
  requireTool,
  run,
  tempDir,
  textLike,
} from "./helpers.ts";
import { makeIso } from "./iso-maker.ts";
import { accessLogRequests, startNginx } from "./nginx.ts";

const LAYOUTS: Record<string, { files: string[]; family: string | null; kernel?: string }> = {
  casper: {
    files: ["casper/vmlinuz", "casper/initrd", "casper/filesystem.squashfs", ".disk/info"],
    family: "casper",
    kernel: "/casper/vmlinuz",
  },
  "live-boot": {
    files: [
      "live/vmlinuz-6.1.0-9-amd64",
      "live/initrd.img-6.1.0-9-amd64",
      "live/filesystem.squashfs",
    ],
    family: "live-boot",
    kernel: "/live/vmlinuz-6.1.0-9-amd64",
  },
  dracut: {
    files: ["images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "LiveOS/squashfs.img"],
    family: "dracut",
    kernel: "/images/pxeboot/vmlinuz",
  },
  archiso: {
    files: [
      "arch/boot/x86_64/vmlinuz-linux",
      "arch/boot/x86_64/initramfs-linux.img",
      "arch/boot/intel-ucode.img",
      "arch/x86_64/airootfs.sfs",
    ],
    family: "archiso",
    kernel: "/arch/boot/x86_64/vmlinuz-linux",
  },
  knoppix: {
    files: ["boot/isolinux/linux", "boot/isolinux/minirt.gz", "KNOPPIX/KNOPPIX"],
    family: "knoppix",
    kernel: "/boot/isolinux/linux",
  },
  unknown: { files: ["README.txt", "data/blob.bin"], family: null },
};

describe("ISO 9660 reader", () => {
  it("lists what isoinfo lists (Rock Ridge and Joliet names), reads files byte-exact, finds El Torito for BIOS and UEFI", async (t) => {
    const dir = tempDir(t);
    const big = textLike(700_000, 3);
    const files: Record<string, Buffer | string> = {
      "boot/bios.img": Buffer.alloc(2048, 1),
      "boot/efi.img": Buffer.alloc(4096, 2),
      "casper/vmlinuz": "kernel",
      "casper/initrd": big,
      "Deep/Directory With Spaces/a-very-long-file-name-beyond-8.3-rules.squashfs": "x".repeat(
        5000,
      ),
      "MiXeD/CaSe.TXT": "case",
    };
    for (let i = 0; i < 120; i++) files[`many/file-${i}.dat`] = `n${i}`; // a directory over several sectors
    const iso = await makeIso(t, dir, files, [
      "-R",
      "-J",
      "-b",
      "boot/bios.img",
      "-no-emul-boot",
      "-boot-load-size",
      "4",
      "-eltorito-alt-boot",
      "-e",
      "boot/efi.img",
      "-no-emul-boot",
    ]);
    if (!iso || !requireTool(t, "isoinfo", "genisoimage")) return;
    const device = await FileDevice.open(iso, { readOnly: true });
    const image = await IsoImage.open(device);
    assert.equal(image.volume.volumeId, "TEST_LIVE");
    assert.ok(image.volume.rockRidge && image.volume.joliet);
    assert.deepEqual(
      image.volume.elTorito.map((e) => [e.platform, e.bootable, e.emulation]),
      [
        ["bios", true, "none"],
        ["uefi", true, "none"],
      ],
    );
    const bios = image.volume.elTorito[0];
    assert.ok((await device.read(bios.offset, 2048)).equals(Buffer.alloc(2048, 1)));

    const ours = (await image.walk("/", 10)).filter((p) => !p.endsWith("/")).sort();
    const theirs = (await run("isoinfo", ["-i", iso, "-R", "-f"])).stdout
      .split("\n")
      .filter((p) => p && !p.startsWith("/boot.catalog"))
      .filter((p) => Object.keys(files).some((f) => `/${f}` === p))
      .sort();
    assert.deepEqual(
      ours.filter((p) => p !== "/boot.catalog"),
      theirs,
    );
    assert.equal(theirs.length, Object.keys(files).length);
    for (const [path, data] of Object.entries(files)) {
      assert.ok((await image.readFile(`/${path}`)).equals(Buffer.from(data)), path);
    }
    assert.equal(
      (await image.stat("/mixed/case.txt"))?.name,
      "CaSe.TXT",
      "case-insensitive fallback",
    );
    assert.equal(await image.stat("/nope/nothing"), null);
    await assert.rejects(image.stat("/../etc/passwd"), IsoFormatError);
    await device.close();
  });

  it("reads Joliet names when there is no Rock Ridge", async (t) => {
    const dir = tempDir(t);
    const iso = await makeIso(
      t,
      dir,
      { "Some Long Name.squashfs": "j", "sub/Another File.txt": "k" },
      ["-J", "--norock"],
    );
    if (!iso) return;
    const device = await FileDevice.open(iso, { readOnly: true });
    t.after(() => device.close());
    const image = await IsoImage.open(device);
    assert.equal(image.volume.rockRidge, false);
    assert.equal(image.volume.joliet, true);
    assert.deepEqual((await image.walk("/")).sort(), [
      "/Some Long Name.squashfs",
      "/sub/",
      "/sub/Another File.txt",
    ]);
    assert.equal((await image.readFile("/sub/Another File.txt")).toString(), "k");
  });

  it("reads an ISO on nginx by Range requests, never the whole image", async (t) => {
    const dir = tempDir(t);
    const iso = await makeIso(t, dir, {
      "casper/vmlinuz": "kernel",
      "casper/initrd": "initrd",
      "casper/filesystem.squashfs": textLike(6_000_000, 5),
    });
    if (!iso) return;
    const nginx = await startNginx(t, dir);
    if (!nginx) return;
    const device = await HttpDevice.open(`${nginx.url}out.iso`);
    const image = await IsoImage.open(device);
    assert.equal((await image.readFile("/casper/initrd")).toString(), "initrd");
    const recipe = await detectRecipe(image);
    assert.equal(recipe.family, "casper");
    await device.close();
    const log = accessLogRequests(nginx.accessLog);
    const bytes = log.reduce((n, r) => n + r.bytes, 0);
    assert.ok(
      log.every((r) => r.status === 206 || r.method === "HEAD"),
      JSON.stringify(log),
    );
    assert.ok(bytes < 1_000_000, `${bytes} bytes read of a ${readFileSync(iso).length}-byte ISO`);
    // The CLI says the same, over HTTP.
    const r = await inetbootOk(["iso", "inspect", `${nginx.url}out.iso`, "--json"]);
    const parsed = JSON.parse(r.stdout) as { recipe: { family: string; initrd: string[] } };
    assert.equal(parsed.recipe.family, "casper");
    assert.deepEqual(parsed.recipe.initrd, ["/casper/initrd"]);
  });

  for (const [name, layout] of Object.entries(LAYOUTS)) {
    it(`recognises the ${name} layout`, async (t) => {
      const dir = tempDir(t);
      const iso = await makeIso(t, dir, Object.fromEntries(layout.files.map((f) => [f, `${f}\n`])));
      if (!iso) return;
      const device = await FileDevice.open(iso, { readOnly: true });
      t.after(() => device.close());
      const image = await IsoImage.open(device);
      const recipe = await detectRecipe(image);
      assert.equal(recipe.family, layout.family);
      if (recipe.family !== null) assert.equal(recipe.kernel, layout.kernel);
      const r = await inetboot(["iso", "inspect", iso]);
      if (layout.family === null) {
        assert.equal(r.code, 1);
        assert.match(r.stdout, /unknown layout/);
        assert.match(r.stdout, /\/data\/blob\.bin/, "lists what was found");
        assert.match(r.stdout, /boot +none: no recipe and no El Torito record/);
      } else {
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`family +${layout.family}`));
        // Lazy (the ISO over NBD) where the family can; KNOPPIX says why it cannot.
        assert.match(
          r.stdout,
          layout.family === "knoppix"
            ? /lazy +no: KNOPPIX's minirt/
            : /lazy +yes: the ISO is attached over NBD/,
        );
      }
    });
  }

  it("a read that fails while the layout is looked at fails detection with its error, never 'not a layout'", async (t) => {
    const dir = tempDir(t);
    const layout = LAYOUTS["live-boot"];
    const iso = await makeIso(t, dir, Object.fromEntries(layout.files.map((f) => [f, `${f}\n`])));
    if (!iso) return;
    const good = new BufferDevice(readFileSync(iso));
    /** Reads to fail from now on (a network blip: the ones after succeed again). */
    let failing = 0;
    const flaky: BlockDevice = {
      size: good.size,
      readOnly: true,
      read(offset, length) {
        if (failing > 0) {
          failing--;
          return Promise.reject(new BlockIoError("HTTP 503 from the origin"));
        }
        return good.read(offset, length);
      },
      close: () => good.close(),
    };
    const image = await IsoImage.open(flaky);
    // The first read after opening is the root directory, listed to look in /live.
    failing = 1;
    await assert.rejects(detectRecipe(image, "live-boot"), (err: Error) => {
      assert.match(err.message, /HTTP 503 from the origin/);
      assert.doesNotMatch(err.message, /layout/);
      return true;
    });
    // Once reads work again, the same image is recognised.
    const recipe = await detectRecipe(image, "live-boot");
    assert.equal(recipe.family, "live-boot");
    // A directory that is not there is still "not this layout", not an error.
    const miss = await detectRecipe(image, "archiso");
    assert.equal(miss.family, null);
    assert.match(miss.family === null ? miss.message : "", /not a archiso layout/);
  });

  it("inspect: an unknown layout with an El Torito record boots as a CD-ROM (iPXE's own ISO)", async (t) => {
    if (!requireFile(t, "/usr/lib/ipxe/ipxe.iso", "ipxe")) return;
    const r = await inetboot(["iso", "inspect", "/usr/lib/ipxe/ipxe.iso"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /El Torito +bios no emulation; uefi no emulation/);
    assert.match(r.stdout, /boot +as a CD-ROM: inetboot serve has iPXE sanboot it/);
    assert.match(r.stdout, /\/isolinux\.bin/);
  });

  it("damaged images give IsoFormatError, never a crash or a read outside the image", async (t) => {
    const dir = tempDir(t);
    const iso = await makeIso(t, dir, {
      "casper/vmlinuz": "k",
      "casper/initrd": "i",
      "a/b/c.txt": "c",
    });
    if (!iso) return;
    const good = readFileSync(iso);
    await assert.rejects(
      IsoImage.open(new BufferDevice(good.subarray(0, 10 * 2048))),
      IsoFormatError,
    );
    await assert.rejects(
      IsoImage.open(new BufferDevice(Buffer.alloc(40 * 2048))),
      /not an ISO 9660/,
    );
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (let i = 0; i < 300; i++) {
      const bad = Buffer.from(good);
      // Damage the descriptors and the first directory sectors, where the structure lives.
      for (let k = 0; k < 8; k++) bad[16 * 2048 + rnd(12 * 2048)] = rnd(256);
      try {
        const image = await IsoImage.open(new BufferDevice(bad));
        await image.walk("/", 5);
        await image.readFile("/casper/initrd").catch((err: unknown) => {
          if (!(err instanceof IsoFormatError)) throw err;
        });
      } catch (err) {
        assert.ok(err instanceof IsoFormatError, `mutation ${i}: ${(err as Error).stack}`);
      }
    }
  });

  it("reads files recorded in several extents (as for 4 GiB and more), contiguous or not", async (t) => {
    const dir = tempDir(t);
    const big = textLike(10_000, 5);
    const tail = textLike(9_000, 6);
    const iso = await makeIso(t, dir, { "big.bin": big, "tail.bin": tail }, ["-R"]);
    if (!iso) return;
    const bytes = readFileSync(iso);
    // Split big.bin's directory record in two parts: 4096 bytes (flag 0x80: more follows),
    // then the rest, once where the rest follows on, once pointing at tail.bin's data.
    const rootExtent = bytes.readUInt32LE(16 * 2048 + 156 + 2);
    const dirAt = rootExtent * 2048;
    const records: Buffer[] = [];
    for (let at = dirAt; bytes[at] !== 0; at += bytes[at]) {
      records.push(Buffer.from(bytes.subarray(at, at + bytes[at])));
    }
    const nameOf = (r: Buffer): string => r.toString("latin1", 33, 33 + r[32]);
    const bigRecord = records.find((r) => nameOf(r).startsWith("BIG.BIN")) as Buffer;
    const tailRecord = records.find((r) => nameOf(r).startsWith("TAIL.BIN")) as Buffer;
    const setExtent = (r: Buffer, extent: number, size: number, flags: number): Buffer => {
      const c = Buffer.from(r);
      c.writeUInt32LE(extent, 2);
      c.writeUInt32BE(extent, 6);
      c.writeUInt32LE(size, 10);
      c.writeUInt32BE(size, 14);
      c[25] = flags;
      return c;
    };
    const bigExtent = bigRecord.readUInt32LE(2);
    const variant = (second: number): Buffer => {
      const out = Buffer.from(bytes);
      const parts = records.flatMap((r) =>
        r === bigRecord
          ? [setExtent(r, bigExtent, 4096, 0x80), setExtent(r, second, 10_000 - 4096, 0)]
          : [r],
      );
      const table = Buffer.concat(parts);
      assert.ok(table.length <= 2048, "the root directory still fits its sector");
      out.fill(0, dirAt, dirAt + 2048);
      table.copy(out, dirAt);
      return out;
    };
    const contiguous = await IsoImage.open(new BufferDevice(variant(bigExtent + 2)));
    const a = await contiguous.stat("/big.bin");
    assert.deepEqual([a?.size, a?.extents], [10_000, undefined]);
    assert.ok((await contiguous.readFile("/big.bin")).equals(big));
    assert.equal((await contiguous.list("/")).filter((e) => e.name === "big.bin").length, 1);

    const split = await IsoImage.open(new BufferDevice(variant(tailRecord.readUInt32LE(2))));
    const b = await split.stat("/big.bin");
    assert.equal(b?.size, 10_000);
    assert.equal(b?.extents?.length, 2);
    const expected = Buffer.concat([big.subarray(0, 4096), tail.subarray(0, 10_000 - 4096)]);
    assert.ok((await split.readFile("/big.bin")).equals(expected));
    // A read across the seam, through the file's device view.
    const view = split.file(b);
    assert.ok((await view.read(4000, 200)).equals(expected.subarray(4000, 4200)));
  });
});
