// Live ISOs booted lazily, end to end, in QEMU through iPXE and `inetboot serve`: the ISO is a
// read-only NBD export and the live system's own initrd (with inetboot's overlay) attaches it as
// /dev/nbd0 and finds its medium there, as if the CD were in the drive.
//  - Debian live (real live-boot + initramfs-tools, a ~230 MB squashfs of Debian packages) boots
//    to its login prompt with 768 MB of RAM; the origin sends a fraction of the ISO.
//  - dracut (real dmsquash-live from Debian's dracut 059) finds the ISO by its label.
//  - casper's place is taken by a stand-in /scripts/casper inside the same real initramfs-tools
//    initrd (casper is not packaged for Debian): it proves inetboot's boot script hands
//    /dev/nbd0 to the family's script; archiso's place by a busybox initrd that runs exactly
//    archiso_pxe_nbd's nbd-client call (mkinitcpio is not packaged for Debian either).
//  - `inetboot run ISO` boots the same ISO lazily, then again with --offline from its cache.
import assert from "node:assert/strict";
import { mkdirSync, linkSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { writeCpio } from "../src/boot/cpio.ts";
import { nbdClientBundle } from "../src/boot/nbd-client-bundle.ts";
import { hostKernel } from "./debian-rootfs.ts";
import { CLI, FixtureScope, requireFile, requireTool, run, runOk, tempDir } from "./helpers.ts";
import { dracutLiveParts, LIVE_MARKER, liveBootParts } from "./live-distros.ts";
import type { LiveParts } from "./live-distros.ts";
import { busyboxStatic, networkMarkerInitrd } from "./marker-initrd.ts";
import { accessLogRequests, lanWithOrigin } from "./nginx.ts";
import { requireNetns, startServe } from "./netns.ts";
import type { ServeProcess, TestLan } from "./netns.ts";
import { bootUntil, tapNic, uefiMachine } from "./qemu.ts";

/** An ISO of `files` (ISO path → host file, hard-linked into the tree) made by xorriso. */
async function isoOf(dir: string, name: string, label: string, files: Record<string, string>) {
  const tree = join(dir, `${name}.tree`);
  for (const [path, from] of Object.entries(files)) {
    mkdirSync(join(tree, path, ".."), { recursive: true });
    linkSync(from, join(tree, path));
  }
  const iso = join(dir, name);
  await runOk("xorriso", ["-as", "mkisofs", "-quiet", "-R", "-J", "-V", label, "-o", iso, tree]);
  return iso;
}

/** `b` padded with zeros to a multiple of 4 bytes (the kernel reads a cpio header only there). */
const padded = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);

/**
 * casper's stand-in: a boot script that does what casper's does with live-media= (mount the
 * named device, look for casper/filesystem.squashfs) and prints what it found.
 */
const FAKE_CASPER = `mountroot()
{
	for x in $(cat /proc/cmdline); do
		case "$x" in live-media=*) dev="\${x#live-media=}" ;; esac
	done
	modprobe isofs
	mkdir -p /cdrom
	mount -t iso9660 -o ro "$dev" /cdrom || panic "casper stand-in: cannot mount $dev"
	sum=$(sha256sum /cdrom/casper/filesystem.squashfs | cut -d' ' -f1)
	echo "INETBOOT-CASPER medium=$dev sha256=$sum END" > /dev/console
	echo o > /proc/sysrq-trigger
}
`;

/** archiso_pxe_nbd's attach (nbd-client SRV -N NAME /dev/nbd0, port 10809), then a look. */
const ARCHISO_NBD = `for p in $(cat /proc/cmdline); do
  case "$p" in
    archiso_nbd_srv=*) SRV="\${p#archiso_nbd_srv=}" ;;
    archiso_nbd_name=*) NAME="\${p#archiso_nbd_name=}" ;;
  esac
done
insmod /modules/nbd.ko; insmod /modules/cdrom.ko; insmod /modules/isofs.ko
L=/inetboot
$L/ld-linux.so --library-path $L $L/nbd-client "$SRV" -N "$NAME" /dev/nbd0 -systemd-mark -persist
mkdir -p /run/archiso/bootmnt
mount -t iso9660 -o ro /dev/nbd0 /run/archiso/bootmnt
S=$(sha256sum /run/archiso/bootmnt/arch/x86_64/airootfs.sfs | cut -d' ' -f1)
echo "INETBOOT-ARCHISO srv=$SRV name=$NAME sha256=$S END"
`;

interface Fixture {
  dir: string;
  lan: TestLan;
  tap: string;
  serve: ServeProcess;
  nginxLog: string;
  isos: Record<"debian" | "fedora" | "ubuntu" | "arch", string>;
  parts: { live: LiveParts; dracut: LiveParts };
}

const MACS = {
  debian: "52:54:00:00:16:01",
  fedora: "52:54:00:00:16:02",
  ubuntu: "52:54:00:00:16:03",
  arch: "52:54:00:00:16:04",
};
/** A UEFI machine with Secure Boot enforced that boots the Debian live entry through shim. */
const SECURE_MAC = "52:54:00:00:16:05";

const sha256File = async (path: string): Promise<string> =>
  (await runOk("sha256sum", [path])).stdout.split(" ")[0];

describe("live ISOs booted lazily (the ISO over NBD) in QEMU", { timeout: 2_700_000 }, () => {
  const scope = new FixtureScope();
  let fx: Fixture | null = null;
  after(() => scope.close());

  before(async () => {
    if (!requireNetns(scope) || !requireTool(scope, "qemu-system-x86_64", "qemu-system-x86")) {
      return;
    }
    if (!requireTool(scope, "nginx", "nginx-light") || !requireTool(scope, "xorriso", "xorriso")) {
      return;
    }
    if (!requireTool(scope, "nbd-client", "nbd-client")) return;
    const live = await liveBootParts(scope);
    const dracut = await dracutLiveParts(scope);
    const kit = hostKernel(scope);
    const busybox = busyboxStatic(scope);
    if (!live || !dracut || !kit || !busybox) return;
    const dir = tempDir(scope);
    const web = join(dir, "www");
    mkdirSync(web);
    const kv = live.kernelVersion;
    const casperInitrd = join(dir, "casper-initrd");
    writeFileSync(
      casperInitrd,
      Buffer.concat([
        // The stand-in after the initrd on a 4-byte boundary, as a boot loader places initrds.
        padded(readFileSync(live.initrd)),
        writeCpio([
          { type: "dir", path: "scripts" },
          { type: "file", path: "scripts/casper", data: FAKE_CASPER },
        ]),
      ]),
    );
    const modules = `/lib/modules/${kit.kernel.replace(/^.*vmlinuz-/, "")}/kernel`;
    const archInitrd = join(dir, "arch-initrd");
    // Debian's isofs needs cdrom (multisession).
    const archModules = ["drivers/block/nbd.ko", "drivers/cdrom/cdrom.ko", "fs/isofs/isofs.ko"];
    writeFileSync(
      archInitrd,
      Buffer.concat([
        padded(networkMarkerInitrd(busybox, kit.kernel, "INETBOOT-ARCH", ARCHISO_NBD)),
        writeCpio([
          ...archModules.map((m) => ({
            type: "file" as const,
            path: `modules/${m.split("/").at(-1)}`,
            data: readFileSync(join(modules, m)),
          })),
          ...(await nbdClientBundle()),
        ]),
      ]),
    );
    const isos = {
      debian: await isoOf(web, "debian-live.iso", "DEBIAN_LIVE", {
        [`live/vmlinuz-${kv}`]: live.kernel,
        [`live/initrd.img-${kv}`]: live.initrd,
        "live/filesystem.squashfs": live.squashfs,
      }),
      fedora: await isoOf(web, "Fedora-Live.iso", "INETLIVE", {
        "images/pxeboot/vmlinuz": dracut.kernel,
        "images/pxeboot/initrd.img": dracut.initrd,
        "LiveOS/squashfs.img": dracut.squashfs,
      }),
      ubuntu: await isoOf(web, "ubuntu.iso", "UBUNTU_LIVE", {
        "casper/vmlinuz": live.kernel,
        "casper/initrd": casperInitrd,
        "casper/filesystem.squashfs": dracut.squashfs,
      }),
      arch: await isoOf(web, "archlinux.iso", "ARCH_202612", {
        "arch/boot/x86_64/vmlinuz-linux": kit.kernel,
        "arch/boot/x86_64/initramfs-linux.img": archInitrd,
        "arch/x86_64/airootfs.sfs": dracut.squashfs,
      }),
    };
    const { lan, tap, nginxDir } = lanWithOrigin(scope, dir, web);
    const config = join(dir, "serve.yaml");
    const entry = (file: string): string =>
      `{ iso: "http://127.0.0.1:8090/${file}", cmdline: "console=ttyS0 panic=-1" }`; // added to the recipe's line
    writeFileSync(
      config,
      `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
tftp: { enabled: true }
http: { port: 8080 }
state: ${join(dir, "state")}
entries:
  debian: ${entry("debian-live.iso")}
  fedora: ${entry("Fedora-Live.iso")}
  ubuntu: ${entry("ubuntu.iso")}
  arch: ${entry("archlinux.iso")}
machines:
${Object.entries(MACS)
  .map(([e, mac]) => `  - { match: { mac: "${mac}" }, boot: ${e} }`)
  .join("\n")}
  - { match: { mac: "${SECURE_MAC}" }, boot: debian, loader: shim }
default: local
`,
    );
    const serve = await startServe(lan, config);
    fx = {
      dir,
      lan,
      tap,
      serve,
      nginxLog: join(nginxDir, "access.log"),
      isos,
      parts: { live, dracut },
    };
  });

  /** Bytes the origin sent of `iso` so far. */
  const originBytes = (f: Fixture, iso: string): number =>
    accessLogRequests(f.nginxLog)
      .filter((r) => r.path === `/${iso.split("/").at(-1)}`)
      .reduce((n, r) => n + r.bytes, 0);

  it("Debian live (live-boot) boots to its login prompt with 768 MB of RAM, its medium /dev/nbd0; the origin sends a fraction of the ISO", async (t) => {
    if (!scope.ready(t) || !fx) return;
    const out = await bootUntil(
      tapNic(fx.tap, MACS.debian, { model: "e1000" }),
      /inetboot-live login:/,
      600_000,
      { netns: fx.lan.server, memoryMb: 768 },
    );
    const marker = LIVE_MARKER.exec(out);
    assert.ok(marker, out.slice(-3000));
    assert.equal(marker[1], "/dev/nbd0", "live-boot's medium is the NBD device");
    assert.match(out, /boot=inetboot-live inetboot\.boot=live inetboot\.iso=\S+\/iso\/debian /);
    const size = statSync(fx.isos.debian).size;
    const sent = originBytes(fx, fx.isos.debian);
    t.diagnostic(
      `debian live: origin sent ${sent} of ${size} bytes (${((100 * sent) / size).toFixed(1)}%), RAM ${marker[3]} kB`,
    );
    assert.ok(sent < 0.6 * size, `origin sent ${sent} of ${size} bytes`);
  });

  it("under UEFI Secure Boot (OVMF, Microsoft keys), shim → GRUB boots the live ISO's signed kernel over TFTP and the ISO over NBD", async (t) => {
    if (!scope.ready(t) || !fx) return;
    if (!requireFile(t, "/usr/lib/shim/shimx64.efi.signed", "shim-signed")) return;
    const fw = uefiMachine(fx.dir, "x86_64", true);
    if (!fw.files.every((f) => requireFile(t, f, "ovmf"))) return;
    // Up to live-boot putting the ISO's squashfs on a loop device (the rest of the live
    // system's boot is the Debian live test's above; it is minutes under TCG).
    const out = await bootUntil(
      [...fw.args, ...tapNic(fx.tap, SECURE_MAC, { romfile: "" })],
      /loop0: detected capacity change/,
      600_000,
      { netns: fx.lan.server, memoryMb: 1024 },
    );
    assert.match(out, /secureboot: Secure boot enabled/);
    assert.match(out, /Command line: [^\n]*inetboot\.iso=\S+\/iso\/debian /);
    assert.match(out, /inetboot: attaching the live ISO/);
    const nbd = out.indexOf("nbd0: detected capacity change");
    assert.ok(nbd > 0, "the ISO is attached over NBD");
    assert.ok(out.indexOf("loop0: detected capacity change") > nbd, "its squashfs comes after");
    const mine = fx.serve.logs.filter((l) => l.mac === SECURE_MAC).map((l) => l.event);
    for (const e of ["grub-plan", "tftp-kernel", "tftp-initrd"]) {
      assert.ok(mine.includes(e), `no ${e} in ${mine.join(", ")}`);
    }
  });

  it("dracut (dmsquash-live) finds the ISO by its label on /dev/nbd0", async (t) => {
    if (!scope.ready(t) || !fx) return;
    const out = await bootUntil(
      tapNic(fx.tap, MACS.fedora, { model: "e1000" }),
      /inetboot-live login:|dracut Warning: Could not boot|Entering emergency mode/,
      // 250 s alone; other QEMU tests may run beside it on a 2-core machine.
      900_000,
      { netns: fx.lan.server, memoryMb: 1024 },
    );
    const marker = LIVE_MARKER.exec(out);
    assert.ok(marker, out.slice(-4000));
    assert.match(marker[1], /nbd0|by-label\/INETLIVE/, "dmsquash-live's medium is the NBD device");
    const size = statSync(fx.isos.fedora).size;
    const sent = originBytes(fx, fx.isos.fedora);
    t.diagnostic(
      `dracut live: origin sent ${sent} of ${size} bytes (${((100 * sent) / size).toFixed(1)}%)`,
    );
    assert.ok(sent < size, `origin sent ${sent} of ${size} bytes`);
  });

  it("casper's place (inetboot's boot script, then /scripts/casper) and archiso's NBD hook read the ISO from /dev/nbd0", async (t) => {
    if (!scope.ready(t) || !fx) return;
    const squash = await sha256File(fx.parts.dracut.squashfs);
    const casper = await bootUntil(
      tapNic(fx.tap, MACS.ubuntu, { model: "e1000" }),
      /INETBOOT-CASPER[^\n]*END|Kernel panic|\(initramfs\)/,
      300_000,
      { netns: fx.lan.server, memoryMb: 768 },
    );
    assert.match(
      casper,
      new RegExp(`INETBOOT-CASPER medium=/dev/nbd0 sha256=${squash} END`),
      casper.slice(-3000),
    );
    const arch = await bootUntil(
      tapNic(fx.tap, MACS.arch, { model: "e1000" }),
      /INETBOOT-ARCHISO[^\n]*END|INETBOOT-ARCH-NO-DHCP/,
      300_000,
      { netns: fx.lan.server, memoryMb: 768 },
    );
    assert.match(
      arch,
      new RegExp(
        `INETBOOT-ARCHISO srv=${fx.lan.serverAddress.replace(/\./g, "\\.")} name=iso/arch sha256=${squash} END`,
      ),
      arch.slice(-3000),
    );
    assert.match(arch, /copytoram=n/);
  });

  it("inetboot run boots the Debian live ISO lazily, then again --offline from what the first boot cached", async (t) => {
    if (!scope.ready(t) || !fx) return;
    const cache = join(fx.dir, "run-cache");
    const ns = fx.lan.server;
    const runIso = async (extra: string[]): Promise<string> => {
      const r = await run("ip", [
        "netns",
        "exec",
        ns,
        process.execPath,
        CLI,
        "run",
        "http://127.0.0.1:8090/debian-live.iso",
        "--cache",
        cache,
        "--memory",
        "768",
        "--cmdline",
        "console=ttyS0",
        "--until",
        "inetboot-live login:",
        "--timeout",
        "600",
        ...extra,
      ]);
      assert.equal(r.code, 0, `inetboot run ${extra.join(" ")}:\n${r.stderr.slice(-3000)}`);
      return r.stdout + r.stderr;
    };
    const first = await runIso([]);
    assert.match(first, /medium +the ISO over NBD/);
    const offline = await runIso(["--offline"]);
    assert.match(offline, /medium +the ISO over NBD/);
    assert.match(offline, /0 B fetched|nothing fetched/);
  });
});
