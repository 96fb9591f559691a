// End to end: the Debian installer (debian-installer-12-netboot-amd64) network-boots in QEMU
// through iPXE from a kernel entry whose command line names a preseed file templated per
// machine ({file-url:preseed.cfg}); the installer configures its network by DHCP, fetches the
// preseed from the server and runs its early_command, which prints the machine's templated
// host name and MAC on the serial console: the answers were taken. (hostname= and domain= on
// the command line, as Debian's guide says: the installer asks them before it fetches the
// preseed when DHCP gives none.)
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { requireFile, requireTool, tempDir } from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import { bootUntil, tapNic } from "./qemu.ts";

const DI = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64";
const MAC = "52:54:00:12:34:d1";
const MARKER = /INETBOOT-PRESEED host=(\S+) mac=(\S+) END/;

it(
  "the Debian installer takes its preseed answers from a file templated for the machine",
  { timeout: 900_000 },
  async (t) => {
    if (!requireNetns(t) || !requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireFile(t, `${DI}/linux`, "debian-installer-12-netboot-amd64")) return;
    const dir = tempDir(t, "inetboot-preseed-");
    writeFileSync(
      join(dir, "preseed.cfg"),
      `# preseed for {{ hostname }} ({{ mac }}), served by {{ server }}
d-i debian-installer/locale string en_US.UTF-8
d-i keyboard-configuration/xkb-keymap select us
d-i netcfg/choose_interface select auto
d-i netcfg/get_hostname string {{ hostname }}
d-i netcfg/get_domain string lab
d-i preseed/early_command string echo "INETBOOT-PRESEED host={{ hostname }} mac={{ mac }} END" > /dev/console
`,
    );
    const lan = createLan(t);
    const tap = lan.addTap();
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen: { interface: br0, address: ${lan.serverAddress} }
# A router and a name server: without them the installer stops to ask before it fetches the
# preseed.
dhcp:
  mode: full
  range: [${lan.prefix}.100, ${lan.prefix}.150]
  router: ${lan.serverAddress}
  dns: [${lan.serverAddress}]
http: { port: 8080 }
state: ${dir}/state
entries:
  install:
    kernel: ${DI}/linux
    initrd: [${DI}/initrd.gz]
    cmdline: auto=true priority=critical url={file-url:preseed.cfg} hostname=unassigned-hostname domain=unassigned-domain console=ttyS0,115200
    files: { preseed.cfg: ${dir}/preseed.cfg }
machines:
  - { match: { mac: "${MAC}" }, boot: install, hostname: lab-17 }
`,
    );
    const serve = await startServe(lan, config);
    const out = await bootUntil(tapNic(tap, MAC), MARKER, 800_000, {
      netns: lan.server,
      memoryMb: 1024,
    });
    const m = MARKER.exec(out);
    assert.ok(m, out.slice(-3000));
    assert.equal(m[1], "lab-17");
    assert.equal(m[2], MAC);
    const fetched = serve.logs.find((l) => l.event === "machine-file" && l.file === "preseed.cfg");
    assert.ok(fetched, "the installer fetched its preseed from the server");
    assert.match(
      out,
      /url=http:\/\/[0-9.]+:8080\/machine-files\/install\/52-54-00-12-34-d1\/preseed\.cfg/,
    );
  },
);
