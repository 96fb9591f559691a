// QEMU (TCG) boots a Debian root filesystem from `inetboot attach` over NBD, with the host's
// kernel and initrd, and chunks coming over HTTP from a real nginx.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { startAttach } from "./attach.ts";
import { debianTree, hostKernel, packTree } from "./debian-rootfs.ts";
import { inetbootOk, requireTool, tempDir } from "./helpers.ts";
import { startNginx } from "./nginx.ts";
import { bootUntil } from "./qemu.ts";

it(
  "QEMU boots a Debian root filesystem over NBD from a store behind nginx",
  { timeout: 600_000 },
  async (t) => {
    if (
      !requireTool(t, "qemu-system-x86_64", "qemu-system-x86") ||
      !requireTool(t, "mkfs.ext4", "e2fsprogs")
    )
      return;
    const kit = hostKernel(t);
    if (!kit) return;
    const dir = tempDir(t);
    const tree = debianTree(t, dir);
    if (!tree) return;
    await packTree(tree, dir, "debian");
    const nginx = await startNginx(t, dir);
    if (!nginx) return;
    const sock = join(dir, "nbd.sock");
    const a = await startAttach(t, [
      "debian",
      "--store",
      `${nginx.url}store`,
      "--trust",
      join(dir, "k.pub"),
      "--state",
      join(dir, "s"),
      "--cache",
      join(dir, "cache"),
      "--listen",
      `unix:${sock}`,
    ]);

    const out = await bootUntil(
      [
        "-kernel",
        kit.kernel,
        "-initrd",
        kit.initrd,
        "-append",
        "console=ttyS0 root=/dev/vda ro init=/inetboot-marker panic=-1",
        "-drive",
        `file=nbd:unix:${sock},format=raw,if=virtio,readonly=on`,
      ],
      /INETBOOT-ROOT-OK[^\n]*\n/,
      300_000,
    );
    const line = out.split("\n").find((l) => l.startsWith("INETBOOT-ROOT-OK")) ?? "";
    assert.match(line, /^INETBOOT-ROOT-OK Debian GNU\/Linux 12 \(bookworm\) \S+ \/ ext4 ro/);
    await a.stop();

    // Only what the boot read crossed the network: far less than the image.
    const log = readFileSync(nginx.accessLog, "utf8");
    const chunkGets = log.split("\n").filter((l) => l.includes(".cacnk"));
    const bytes = chunkGets.reduce((n, l) => n + Number(/" 200 (\d+)/.exec(l)?.[1] ?? 0), 0);
    const stored = (await inetbootOk(["ls", "--store", join(dir, "store"), "--json"])).stdout;
    assert.ok(chunkGets.length > 0, "no chunk came from nginx");
    assert.ok(
      bytes < 0.5 * (JSON.parse(stored) as { size: number }[])[0].size,
      `${bytes} bytes fetched for a boot`,
    );
  },
);
