// End to end: QEMU network-boots a Debian root filesystem that inetboot serve streams from a
// signed image in a chunk store and exports over NBD (the host's Debian kernel and initrd with
// nbd-client's initramfs support: root=/dev/nbd0 nbdroot=SERVER,EXPORT,nbd0 ip=dhcp). A
// per-machine disk keeps what the first boot wrote.
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { debianTree, hostKernel } from "./debian-rootfs.ts";
import { inetbootOk, requireTool, run, tempDir } from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import { bootUntil } from "./qemu.ts";

const MAC = "52:54:00:12:34:77";

it(
  "QEMU boots a Debian image streamed over NBD; a per-machine disk keeps its writes",
  { timeout: 900_000 },
  async (t) => {
    if (!requireNetns(t) || !requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(t, "mkfs.ext4", "e2fsprogs")) return;
    const kit = hostKernel(t);
    if (!kit) return;
    const dir = tempDir(t);
    const tree = debianTree(t, dir);
    if (!tree) return;
    const init = join(tree, "inetboot-persist");
    writeFileSync(
      init,
      [
        "#!/bin/sh",
        "mount -t proc proc /proc",
        "mount -o remount,rw /",
        "n=$(cat /boot-count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /boot-count; sync",
        'echo "INETBOOT-IMAGE-BOOT count=$n $(grep " / " /proc/mounts)"',
        "echo o > /proc/sysrq-trigger",
        "while :; do :; done",
        "",
      ].join("\n"),
    );
    chmodSync(init, 0o755);
    const image = join(dir, "root.img");
    const mk = await run("mkfs.ext4", [
      "-q",
      "-F",
      "-d",
      tree,
      "-E",
      "root_owner=0:0",
      image,
      "1G",
    ]);
    assert.equal(mk.code, 0, mk.stderr);
    await inetbootOk(["keygen", "--out", join(dir, "k")]);
    await inetbootOk([
      "pack",
      image,
      "--store",
      join(dir, "store"),
      "--name",
      "debian",
      "--key",
      join(dir, "k"),
    ]);

    const lan = createLan(t);
    const tap = lan.addTap();
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
http: { port: 8080 }
state: ${dir}/state
entries:
  debian:
    image: { name: debian, store: ${dir}/store, trust: [${dir}/k.pub] }
    kernel: ${kit.kernel}
    initrd: [${kit.initrd}]
    cmdline: console=ttyS0 init=/inetboot-persist panic=-1
    disk: per-machine
machines:
  - { match: { mac: "${MAC}" }, boot: debian }
`,
    );
    const serve = await startServe(lan, config);
    const args = [
      "-netdev",
      `tap,id=n0,ifname=${tap},script=no,downscript=no`,
      "-device",
      `virtio-net-pci,netdev=n0,mac=${MAC}`,
      "-boot",
      "n",
    ];
    const marker = /INETBOOT-IMAGE-BOOT count=\d+ [^\n]*\n/;
    const first = await bootUntil(args, marker, 400_000, { netns: lan.server, memoryMb: 1024 });
    assert.match(first, /INETBOOT-IMAGE-BOOT count=1 \/dev\/nbd0 \/ ext4 rw/);
    const second = await bootUntil(args, marker, 400_000, { netns: lan.server, memoryMb: 1024 });
    assert.match(
      second,
      /INETBOOT-IMAGE-BOOT count=2 /,
      "the per-machine overlay kept the first boot's write",
    );
    const stages = serve.logs.map((l) => l.event);
    assert.ok(stages.includes("nbd-export"), stages.join(","));
    const opened = serve.logs.find((l) => l.msg === "image opened");
    assert.match(String(opened?.image), /^debian@1/);
  },
);
