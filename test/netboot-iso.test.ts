// Live ISOs booted by URL, end to end: ISOs with the layouts of Ubuntu (casper), Debian live
// (live-boot), Fedora (dracut) and Arch (archiso, with a microcode initrd first), made by xorriso around the host's Debian kernel and a test
// initramfs, sit on nginx in the server's namespace. `inetboot serve` reads them by Range,
// extracts kernel and initrd, and QEMU boots each through its iPXE ROM. The initramfs checks the
// command line the recipe gave it, fetches the ISO or squashfs URL from inetboot (whole, then
// resumed with a Range request) and prints what it got; the test compares it with the source.
// iPXE's own ISO (no recipe fits) is sanbooted from inetboot by BIOS and UEFI machines.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { writeCpio } from "../src/boot/cpio.ts";
import { hostKernel } from "./debian-rootfs.ts";
import { requireFile, requireTool, tempDir, textLike } from "./helpers.ts";
import { makeIso } from "./iso-maker.ts";
import { busyboxStatic, networkMarkerInitrd } from "./marker-initrd.ts";
import { accessLogRequests, lanWithOrigin } from "./nginx.ts";
import { requireNetns, startServe } from "./netns.ts";
import { bootUntil, tapNic } from "./qemu.ts";

const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
const md5 = (b: Buffer): string => createHash("md5").update(b).digest("hex");

/** Finds the URL the recipe put on the command line, fetches it twice (whole, then resumed). */
const FETCH = `for p in $(cat /proc/cmdline); do
  case "$p" in
    url=*) U="\${p#url=}"; F=casper ;;
    fetch=*) U="\${p#fetch=}"; F=live-boot ;;
    root=live:*) U="\${p#root=live:}"; F=dracut ;;
    archiso_http_srv=*) U="\${p#archiso_http_srv=}arch/x86_64/airootfs.sfs"; F=archiso ;;
  esac
done
[ -f /ucode-marker ] && UC=yes || UC=no
if wget -q -O /tmp/got "$U"; then
  head -c 100000 /tmp/got > /tmp/part
  wget -q -c -O /tmp/part "$U" && cmp -s /tmp/got /tmp/part && R=resumed || R=broken
  echo "ISO-FETCH family=$F url=$U sha256=$(sha256sum /tmp/got | cut -d' ' -f1) size=$(wc -c < /tmp/got) range=$R ucode=$UC END"
else
  echo "ISO-FETCH-FAILED url=$U"
fi
`;

describe("live ISOs by URL, booted in QEMU through iPXE", { timeout: 900_000 }, () => {
  it("casper, live-boot, dracut and archiso layouts boot and fetch what their recipe names from inetboot", async (t) => {
    if (!requireNetns(t) || !requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(t, "nginx", "nginx-light")) return;
    const kit = hostKernel(t);
    const busybox = busyboxStatic(t);
    if (!kit || !busybox) return;
    const dir = tempDir(t);
    const web = join(dir, "www");
    const kernel = readFileSync(kit.kernel);
    const initrd = networkMarkerInitrd(busybox, kit.kernel, "INETBOOT-ISO", FETCH);
    const payload = textLike(3_000_000, 7);
    const isos = {
      ubuntu: await makeIso(
        t,
        web,
        {
          "casper/vmlinuz": kernel,
          "casper/initrd": initrd,
          "casper/filesystem.squashfs": payload,
          "md5sum.txt": `${md5(kernel)}  ./casper/vmlinuz\n${md5(initrd)}  ./casper/initrd\n`,
        },
        ["-R", "-J"],
        "ubuntu.iso",
      ),
      debian: await makeIso(
        t,
        web,
        {
          "live/vmlinuz-6.1.0-test-amd64": kernel,
          "live/initrd.img-6.1.0-test-amd64": initrd,
          "live/filesystem.squashfs": payload,
          "sha256sum.txt": `${sha256(initrd)}  ./live/initrd.img-6.1.0-test-amd64\n`,
        },
        ["-R", "-J"],
        "debian-live.iso",
      ),
      fedora: await makeIso(
        t,
        web,
        {
          "images/pxeboot/vmlinuz": kernel,
          "images/pxeboot/initrd.img": initrd,
          "LiveOS/squashfs.img": payload,
        },
        ["-R", "-J"],
        "Fedora-Live.iso",
      ),
      arch: await makeIso(
        t,
        web,
        {
          "arch/boot/x86_64/vmlinuz-linux": kernel,
          "arch/boot/x86_64/initramfs-linux.img": initrd,
          // Loaded before the main initrd, as archiso's microcode images are.
          "arch/boot/amd-ucode.img": writeCpio([
            { type: "file", path: "ucode-marker", data: "INETBOOT-UCODE\n" },
          ]),
          "arch/x86_64/airootfs.sfs": payload,
        },
        ["-R", "-J"],
        "archlinux-x86_64.iso",
      ),
    };
    if (!isos.ubuntu || !isos.debian || !isos.fedora || !isos.arch) return;

    const { lan, tap, nginxDir } = lanWithOrigin(t, dir, web);
    const macs = {
      ubuntu: "52:54:00:00:15:01",
      debian: "52:54:00:00:15:02",
      fedora: "52:54:00:00:15:03",
      arch: "52:54:00:00:15:04",
    };
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
tftp: { enabled: false }
http: { port: 8080 }
state: ${join(dir, "state")}
entries:
  ubuntu: { iso: "http://127.0.0.1:8090/ubuntu.iso", cmdline: "{recipe} console=ttyS0 panic=-1", lazy: false }
  debian: { iso: "http://127.0.0.1:8090/debian-live.iso", cmdline: "console=ttyS0 panic=-1", lazy: false }
  fedora: { iso: "http://127.0.0.1:8090/Fedora-Live.iso", cmdline: "{recipe} console=ttyS0 panic=-1", lazy: false }
  arch: { iso: "http://127.0.0.1:8090/archlinux-x86_64.iso", cmdline: "{recipe} console=ttyS0 panic=-1", lazy: false }
machines:
${Object.entries(macs)
  .map(([entry, mac]) => `  - { match: { mac: "${mac}" }, boot: ${entry} }`)
  .join("\n")}
default: local
`,
    );
    const serve = await startServe(lan, config);
    const base = `http://${lan.serverAddress}:8080/iso`;
    const expected = {
      ubuntu: {
        family: "casper",
        url: `${base}/ubuntu/ubuntu.iso`,
        data: readFileSync(isos.ubuntu),
        cmdline: /boot=casper url=\S+ ip=dhcp console=ttyS0/,
      },
      debian: {
        family: "live-boot",
        url: `${base}/debian/tree/live/filesystem.squashfs`,
        data: payload,
        cmdline: /boot=live fetch=\S+ ip=dhcp console=ttyS0/,
      },
      fedora: {
        family: "dracut",
        url: `${base}/fedora/tree/LiveOS/squashfs.img`,
        data: payload,
        cmdline: /root=live:\S+ rd\.live\.image rd\.neednet=1 ip=dhcp console=ttyS0/,
      },
      arch: {
        family: "archiso",
        url: `${base}/arch/tree/arch/x86_64/airootfs.sfs`,
        data: payload,
        cmdline: /archisobasedir=arch archiso_http_srv=\S+\/tree\/ ip=dhcp console=ttyS0/,
      },
    };
    for (const [entry, want] of Object.entries(expected)) {
      const out = await bootUntil(
        tapNic(tap, macs[entry as keyof typeof macs], { model: "e1000" }),
        /ISO-FETCH[^\n]* END\r?\n|ISO-FETCH-FAILED[^\n]*\n|INETBOOT-ISO-NO-DHCP/,
        240_000,
        { netns: lan.server },
      );
      const got =
        /ISO-FETCH family=(\S+) url=(\S+) sha256=(\w+) size=(\d+) range=(\w+) ucode=(\w+) END/.exec(
          out,
        );
      assert.ok(got, `${entry}: the guest did not fetch its URL:\n${out.slice(-3000)}`);
      assert.match(out, want.cmdline, `${entry}: command line`);
      assert.deepEqual(
        {
          family: got[1],
          url: got[2],
          sha256: got[3],
          size: Number(got[4]),
          range: got[5],
          ucode: got[6],
        },
        {
          family: want.family,
          url: want.url,
          sha256: sha256(want.data),
          size: want.data.length,
          range: "resumed",
          // Only archiso has a microcode initrd; it must come first and be kept.
          ucode: entry === "arch" ? "yes" : "no",
        },
        entry,
      );
      await serve.waitFor((l) => l.msg === "ISO opened" && l.entry === entry);
    }
    // The origin only ever answered Range requests, and never sent an ISO more than once over.
    const log = accessLogRequests(join(nginxDir, "access.log"));
    for (const [entry, path] of Object.entries(isos) as [string, string][]) {
      const name = `/${path.split("/").at(-1)}`;
      const requests = log.filter((r) => r.path === name);
      assert.ok(
        requests.length > 0 && requests.every((r) => r.status === 206),
        `${entry}: ${JSON.stringify(requests.slice(0, 3))}`,
      );
      const bytes = requests.reduce((n, r) => n + r.bytes, 0);
      assert.ok(bytes <= readFileSync(path).length + 1, `${entry}: ${bytes} bytes from the origin`);
    }
  });

  /**
   * iPXE's own ISO (no recipe fits) as an ISO entry on nginx, booted by a QEMU machine whose
   * iPXE sanboots inetboot's cached copy: BIOS (QEMU's iPXE ROM; ISOLINUX runs) or UEFI (OVMF
   * fetches ipxe.efi over TFTP; the ISO's EFI El Torito image runs). Returns the console.
   */
  async function sanbootIso(t: TestContext, firmware: "bios" | "uefi"): Promise<string | null> {
    if (!requireNetns(t) || !requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return null;
    if (!requireTool(t, "nginx", "nginx-light")) return null;
    if (!requireFile(t, "/usr/lib/ipxe/ipxe.iso", "ipxe")) return null;
    const ovmf = {
      code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
      vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
    };
    if (firmware === "uefi" && !requireFile(t, ovmf.code, "ovmf")) return null;
    const dir = tempDir(t);
    const web = join(dir, "www");
    mkdirSync(web);
    copyFileSync("/usr/lib/ipxe/ipxe.iso", join(web, "rescue.iso"));
    const { lan, tap, nginxDir } = lanWithOrigin(t, dir, web);
    const mac = "52:54:00:00:15:09";
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
tftp: { enabled: ${firmware === "uefi"} }
http: { port: 8080 }
state: ${join(dir, "state")}
entries:
  rescue: { iso: "http://127.0.0.1:8090/rescue.iso", title: Rescue CD }
machines:
  - { match: { mac: "${mac}" }, boot: rescue }
default: local
`,
    );
    const serve = await startServe(lan, config);
    let machine: string[];
    if (firmware === "bios") {
      machine = tapNic(tap, mac, { model: "e1000" });
    } else {
      const vars = join(dir, "vars.fd");
      copyFileSync(ovmf.vars, vars);
      machine = [
        "-machine",
        "q35",
        "-drive",
        `if=pflash,format=raw,unit=0,readonly=on,file=${ovmf.code}`,
        "-drive",
        `if=pflash,format=raw,unit=1,file=${vars}`,
        ...tapNic(tap, mac, { romfile: "" }),
      ];
    }
    // The machine's iPXE prints its banner first; the ISO's iPXE (started from the sanbooted
    // CD) prints it a second time.
    const out = await bootUntil(
      machine,
      /iPXE initialising devices[\s\S]*iPXE initialising devices/,
      firmware === "bios" ? 240_000 : 600_000,
      { netns: lan.server, memoryMb: 1024 },
    );
    assert.match(
      out,
      new RegExp(
        `sanboot --no-describe http://${lan.serverAddress.replace(/\./g, "\\.")}:8080/iso/rescue/rescue\\.iso|Booting Rescue CD from its own boot record`,
      ),
    );
    const opened = await serve.waitFor((l) => l.msg === "ISO opened" && l.entry === "rescue");
    assert.equal(opened.family, "cdrom");
    // The origin answered Range requests only, each byte once (+1: the size probe).
    const requests = accessLogRequests(join(nginxDir, "access.log")).filter(
      (r) => r.path === "/rescue.iso",
    );
    assert.ok(requests.length > 0 && requests.every((r) => r.status === 206));
    const bytes = requests.reduce((n, r) => n + r.bytes, 0);
    assert.ok(
      bytes <= statSync(join(web, "rescue.iso")).size + 1,
      `${bytes} bytes from the origin`,
    );
    return out;
  }

  it("an ISO no recipe knows (iPXE's own: ISOLINUX) boots from its own boot record: iPXE sanboots inetboot's cached copy (BIOS)", async (t) => {
    const out = await sanbootIso(t, "bios");
    if (out) assert.match(out, /ISOLINUX/, "ISOLINUX from the ISO started");
  });

  it("the same ISO sanbooted by UEFI (OVMF, ipxe.efi over TFTP): the ISO's EFI boot image runs", async (t) => {
    await sanbootIso(t, "uefi");
  });
});
