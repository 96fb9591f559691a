// Lazy ISO entries in the boot server, in process: the plan of each family's lazy recipe (the
// ISO's NBD export on the command line, the initrd overlay after the ISO's initrds), the export
// read back with libnbd (the ISO's bytes, read-only, shared), names that open nothing else,
// and the download recipe where an entry or a family says so; /api/images counts the bytes.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { LiveIso } from "../src/iso/live-iso.ts";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { requireTool, run, runOk, tempDir, textLike } from "./helpers.ts";
import { makeIso } from "./iso-maker.ts";

const MAC = "52-54-00-12-34-57";
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

const KERNEL = textLike(200_000, 11);
const INITRD = textLike(400_000, 12);
const SQUASHFS = textLike(2_000_000, 13);

async function serve(t: TestContext, dir: string, entries: string): Promise<BootServer> {
  const config = parseConfig(
    `http: { port: 0, address: 127.0.0.1 }\nnbd: { port: 0 }\nstate: ${dir}/state\n${entries}`,
    join(dir, "serve.yaml"),
  );
  const srv = new BootServer(config);
  await srv.start();
  t.after(() => srv.stop());
  return srv;
}

async function script(srv: BootServer, entry: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${srv.httpPort}/ipxe/entry/${entry}?mac=${MAC}`);
  return res.text();
}

describe("lazy ISO entries (the ISO as an NBD export)", () => {
  it("each family's lazy plan: its export and overlay; the export is the ISO, read-only; other names open nothing", async (t) => {
    if (!requireTool(t, "nbdcopy", "libnbd-bin") || !requireTool(t, "nbdinfo", "libnbd-bin")) {
      return;
    }
    if (!requireTool(t, "nbd-client", "nbd-client")) return;
    const dir = tempDir(t);
    const iso = (name: string, files: Record<string, Buffer | string>) =>
      makeIso(t, dir, files, ["-R", "-J"], name);
    const isos = {
      ubuntu: await iso("ubuntu.iso", {
        "casper/vmlinuz": KERNEL,
        "casper/initrd": INITRD,
        "casper/filesystem.squashfs": SQUASHFS,
      }),
      debian: await iso("debian.iso", {
        "live/vmlinuz-6.1.0-amd64": KERNEL,
        "live/initrd.img-6.1.0-amd64": INITRD,
        "live/filesystem.squashfs": SQUASHFS,
      }),
      fedora: await iso("fedora.iso", {
        "images/pxeboot/vmlinuz": KERNEL,
        "images/pxeboot/initrd.img": INITRD,
        "LiveOS/squashfs.img": SQUASHFS,
      }),
      arch: await iso("arch.iso", {
        "arch/boot/x86_64/vmlinuz-linux": KERNEL,
        "arch/boot/x86_64/initramfs-linux.img": INITRD,
        "arch/x86_64/airootfs.sfs": SQUASHFS,
      }),
      knoppix: await iso("knoppix.iso", {
        "boot/isolinux/linux": KERNEL,
        "boot/isolinux/minirt.gz": INITRD,
      }),
    };
    if (Object.values(isos).some((p) => !p)) return;
    const srv = await serve(
      t,
      dir,
      `entries:
  ubuntu: { iso: ${isos.ubuntu}, cmdline: "{recipe} console=ttyS0" }
  debian: { iso: ${isos.debian} }
  fedora: { iso: ${isos.fedora} }
  arch: { iso: ${isos.arch} }
  knoppix: { iso: ${isos.knoppix} }
  downloaded: { iso: ${isos.debian}, lazy: false }
  replaced: { iso: ${isos.ubuntu}, cmdline-replace: "boot=casper url={iso}" }
default: local
`,
    );
    const nbd = `127.0.0.1:${srv.nbdPort}`;
    const base = `http://127.0.0.1:${srv.httpPort}`;
    const want: Record<string, { cmdline: string; initrds: number }> = {
      ubuntu: {
        cmdline: `boot=inetboot-live inetboot.boot=casper inetboot.iso=${nbd}/iso/ubuntu live-media=/dev/nbd0 ip=dhcp console=ttyS0`,
        initrds: 2,
      },
      debian: {
        cmdline: `boot=inetboot-live inetboot.boot=live inetboot.iso=${nbd}/iso/debian live-media=/dev/nbd0 ip=dhcp`,
        initrds: 2,
      },
      fedora: {
        cmdline: `root=live:CDLABEL=TEST_LIVE rd.live.image rd.neednet=1 ip=dhcp inetboot.iso=${nbd}/iso/fedora`,
        initrds: 2,
      },
      // archiso's own NBD hook reaches port 10809 only: on another port it downloads.
      arch: {
        cmdline: `archisobasedir=arch archiso_http_srv=${base}/iso/arch/tree/ ip=dhcp`,
        initrds: 1,
      },
    };
    for (const [entry, w] of Object.entries(want)) {
      const text = await script(srv, entry);
      const kernel = /\nkernel \S+ ((?:initrd=\S+ )*)(.*) \|\| goto failed/.exec(text);
      assert.ok(kernel, text);
      assert.equal(kernel[2], w.cmdline, entry);
      assert.equal(kernel[1].trim().split(" ").length, w.initrds, `${entry}: ${kernel[1]}`);
    }
    // On port 10809, archiso attaches the ISO itself (no overlay), attached, not copied to RAM.
    const arch = await LiveIso.open(isos.arch as string, { cacheDir: join(dir, "arch-cache") });
    t.after(() => arch.close());
    assert.equal(
      arch.lazyCmdline("http://s/iso/arch", { host: "10.0.0.1", port: 10809, name: "iso/arch" }),
      "archisobasedir=arch archiso_nbd_srv=10.0.0.1 archiso_nbd_name=iso/arch copytoram=n ip=dhcp",
    );
    // The overlay after the ISO's initrd: a cpio with the hook and the server's nbd-client.
    for (const [entry, hook] of [
      ["debian", "scripts/inetboot-live"],
      ["fedora", "usr/lib/dracut/hooks/initqueue/online/50-inetboot-iso.sh"],
    ]) {
      const res = await fetch(`${base}/files/${entry}/initrd/1?mac=${MAC}`);
      assert.equal(res.status, 200, entry);
      const cpio = Buffer.from(await res.arrayBuffer()).toString("latin1");
      assert.ok(cpio.startsWith("070701"), `${entry}: a newc cpio`);
      for (const name of [hook, "inetboot/nbd-client", "inetboot/nbd-attach"]) {
        assert.ok(cpio.includes(`${name}\0`), `${entry}: ${name} in the overlay`);
      }
    }
    assert.equal((await fetch(`${base}/files/arch/initrd/1?mac=${MAC}`)).status, 404);

    // Download recipes: lazy: false, a family with no lazy way, a cmdline-replace.
    assert.match(
      await script(srv, "downloaded"),
      /boot=live fetch=\S+filesystem\.squashfs ip=dhcp/,
    );
    assert.match(await script(srv, "knoppix"), /knoppix_dir=KNOPPIX/);
    assert.match(await script(srv, "replaced"), /initrd=initrd0\.img boot=casper url=\S+ \|\|/);

    // The export is the ISO, byte for byte, and read-only.
    const copy = join(dir, "copy.iso");
    await runOk("nbdcopy", [`nbd://${nbd}/iso/debian`, copy]);
    assert.equal(sha256(readFileSync(copy)), sha256(readFileSync(isos.debian as string)));
    const info = await runOk("nbdinfo", ["--json", `nbd://${nbd}/iso/debian`]);
    const exp = (JSON.parse(info.stdout) as { exports: { is_read_only: boolean }[] }).exports[0];
    assert.equal(exp.is_read_only, true);
    // Names that are not an ISO entry's export open nothing (nor do entries never planned lazily).
    for (const name of [
      "iso/knoppix",
      "iso/downloaded",
      "iso/",
      "iso/../iso/debian",
      "iso",
      "debian",
      "iso/debian/",
    ]) {
      const r = await run("nbdinfo", [`nbd://${nbd}/${name}`]);
      assert.notEqual(r.code, 0, `export ${name} opened`);
    }
    // The images page says how each boots, and what it cost.
    const page = await (await fetch(`${base}/ui/images`)).text();
    assert.match(page, /debian<\/code><\/td>[\s\S]*?lazily \(NBD, initramfs-tools overlay\)/);
    assert.match(page, /downloaded<\/code><\/td>[\s\S]*?downloaded: the entry says lazy: false/);
    assert.match(page, /knoppix<\/code><\/td>[\s\S]*?downloaded: KNOPPIX/);
    assert.match(page, /RAM per machine if downloaded/);
    // /api/images: bytes machines read over NBD, what the origin sent, what a download costs.
    const stats = (await (await fetch(`${base}/api/images`)).json()) as {
      entry: string;
      readBytes: { nbd: number; http: number };
      downloadBytes: number | null;
      lazy: { hook?: string | null; none?: string };
    }[];
    const debian = stats.find((s) => s.entry === "debian");
    assert.ok(debian && debian.readBytes.nbd >= readFileSync(isos.debian as string).length);
    assert.equal(debian.downloadBytes, SQUASHFS.length);
    assert.equal(debian.lazy.hook, "initramfs-tools");
    assert.match(stats.find((s) => s.entry === "knoppix")?.lazy.none ?? "", /KNOPPIX/);
    assert.equal(
      stats.find((s) => s.entry === "ubuntu")?.downloadBytes,
      readFileSync(isos.ubuntu as string).length,
    );
  });
});
