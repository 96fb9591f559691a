// End to end, no restarts: QEMU machines network-boot through iPXE while the boot server is
// changed under them. `inetboot next MAC B` (the CLI over HTTP, from the LAN) makes a machine's
// next boot B and the one after A again. A config edit that adds an entry and changes a rule,
// made while a machine is in the middle of booting an image entry over NBD: that boot
// completes, and the machine's next boot follows the new rule.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { TestContext } from "node:test";
import {
  addPersistInit,
  debianTree,
  hostKernel,
  packTree,
  PERSIST_MARKER,
} from "./debian-rootfs.ts";
import { CLI, FixtureScope, requireTool, tempDir } from "./helpers.ts";
import { busyboxStatic, markerInitrd } from "./marker-initrd.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { ServeProcess, TestLan } from "./netns.ts";
import { bootUntil, tapNic } from "./qemu.ts";

const MAC = "52:54:00:12:35:a1";
const MAC_DISK = "52:54:00:12:35:a2";
const TOKEN = "changes-test-write-token";
const MARKER = /INETBOOT-ENTRY-([A-Z]) cmdline/;

describe("changes while machines boot, without a restart", { timeout: 1_500_000 }, () => {
  const fx = new FixtureScope();
  const ready = (t: TestContext): boolean => fx.ready(t);
  let lan: TestLan;
  let serve: ServeProcess;
  let config: string;
  let yaml: (rule: string, withC: boolean) => string;
  const taps = new Map<string, string>();

  const boot = async (mac: string, marker = MARKER, timeoutMs = 300_000): Promise<string> => {
    const out = await bootUntil(tapNic(taps.get(mac)!, mac), marker, timeoutMs, {
      netns: lan.server,
      memoryMb: 1024,
    });
    return out;
  };
  const entryOf = (out: string): string => MARKER.exec(out)?.[1] ?? "none";

  before(async () => {
    if (!requireNetns(fx) || !requireTool(fx, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(fx, "mkfs.ext4", "e2fsprogs")) return;
    const kit = hostKernel(fx);
    const busybox = busyboxStatic(fx);
    const dir = tempDir(fx, "inetboot-changes-");
    const tree = kit && busybox && debianTree(fx, dir);
    if (!kit || !busybox || !tree) return;
    for (const name of ["A", "B", "C"]) {
      writeFileSync(join(dir, `${name}.cpio`), markerInitrd(busybox, `INETBOOT-ENTRY-${name}`));
    }
    addPersistInit(tree);
    const { store, key } = await packTree(tree, dir, "debian");
    writeFileSync(join(dir, "token"), `${TOKEN}\n`);
    const marker = (name: string): string =>
      `{ kernel: ${kit.kernel}, initrd: [${join(dir, `${name}.cpio`)}], cmdline: console=ttyS0 panic=-1 }`;
    lan = createLan(fx);
    taps.set(MAC, lan.addTap());
    taps.set(MAC_DISK, lan.addTap());
    yaml = (rule, withC) => `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
http: { port: 8080 }
state: ${dir}/state
ui: { write: true, token: ${TOKEN} }
entries:
  a: ${marker("A")}
  b: ${marker("B")}
  disk:
    image: { name: debian, store: ${store}, trust: [${key}.pub] }
    kernel: ${kit.kernel}
    initrd: [${kit.initrd}]
    cmdline: console=ttyS0 init=/inetboot-persist panic=-1
    disk: per-machine
${withC ? `  c: ${marker("C")}\n` : ""}machines:
  - { match: { mac: "${MAC}" }, boot: a }
  - { match: { mac: "${MAC_DISK}" }, boot: ${rule} }
`;
    config = join(dir, "serve.yaml");
    writeFileSync(config, yaml("disk", false));
    serve = await startServe(lan, config);
  });
  after(() => fx.close());

  it("inetboot next MAC B over HTTP: the next boot is B, the one after is A again", async (t) => {
    if (!ready(t)) return;
    assert.equal(entryOf(await boot(MAC)), "A");
    const cli = lan.exec(lan.server, process.execPath, [
      CLI,
      "next",
      MAC,
      "b",
      "--server",
      `http://${lan.serverAddress}:8080`,
      "--token-file",
      join(config, "..", "token"),
    ]);
    assert.match(cli, /next boot b, then its rules/);
    assert.equal(entryOf(await boot(MAC)), "B");
    assert.equal(entryOf(await boot(MAC)), "A");
    assert.ok(serve.logs.some((l) => l.event === "next-boot-used" && l.mac === MAC));
  });

  it("a config edit in the middle of an NBD image boot: the boot completes; the next boot takes the new rule", async (t) => {
    if (!ready(t)) return;
    const running = boot(MAC_DISK, PERSIST_MARKER, 400_000);
    // Once the machine's disk is exported, an edit adds entry c and moves the machine's rule to it.
    await serve.waitFor((l) => l.event === "nbd-export" && l.mac === MAC_DISK, 300_000);
    writeFileSync(config, yaml("c", true));
    await serve.waitFor((l) => l.msg === "configuration reloaded", 30_000);
    const out = await running;
    assert.match(
      out,
      /INETBOOT-IMAGE-BOOT count=1 \/dev\/nbd0 \/ ext4 rw/,
      "the boot in progress completed on its NBD disk",
    );
    assert.equal(entryOf(await boot(MAC_DISK)), "C", "the next boot follows the new rule");
    // A broken edit is refused; the server keeps serving the configuration it has.
    writeFileSync(config, yaml("nowhere", true));
    await serve.waitFor((l) => l.msg === "configuration refused; the running one stays", 30_000);
    assert.equal(entryOf(await boot(MAC_DISK)), "C");
  });
});
