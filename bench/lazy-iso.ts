// Benchmark: a real Debian live ISO (live-boot, ~230 MB squashfs of Debian packages, built from
// Debian's packages by test/live-distros.ts) booted by URL through `inetboot serve` to the login
// prompt, QEMU TCG through iPXE, the origin (nginx) behind an emulated WAN (20 ms each way,
// 50 Mbit/s), in one run:
//   (a) lazy: the ISO is an NBD export the live system attaches (768 MB of RAM)
//   (b) the download recipe (fetch=: live-boot copies the squashfs into RAM), 2 GB of RAM
//   (c) the download recipe with 768 MB of RAM, as (a) had
// Each with a cold cache and a fresh server. Reports time to login, bytes and requests at the
// origin, and the guest's free memory at login where it got there. Not a timed test.
import { linkSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runOk } from "../test/helpers.ts";
import type { Skipper } from "../test/helpers.ts";
import { LIVE_HOSTNAME, LIVE_MARKER, liveBootParts } from "../test/live-distros.ts";
import { startServe, TestLan } from "../test/netns.ts";
import { accessLogRequests, nginxConfig } from "../test/nginx.ts";
import { bootUntil, tapNic } from "../test/qemu.ts";
import { spawnWanProxy, TEST_WAN } from "../test/wan-proxy.ts";
import { stop } from "./stop-child.ts";

const MAC = "52:54:00:12:36:01";
const LOGIN = new RegExp(`${LIVE_HOSTNAME} login:`);
const NGINX_PORT = 8090;
const WAN_PORT = 8091;

interface Row {
  name: string;
  memoryMb: number;
  /** Seconds to the login prompt, or the failure. */
  result: { seconds: number; memTotalKb: number } | { failed: string };
  originBytes: number;
  originRequests: number;
}

const fail: Skipper = {
  skip(reason: string) {
    throw new Error(reason);
  },
};

export async function benchLazyIso(): Promise<string> {
  console.error("building the Debian live system (cached after the first run)…");
  const parts = await liveBootParts(fail);
  if (!parts) throw new Error("cannot build the live-boot parts");
  const dir = mkdtempSync(join(tmpdir(), "inetboot-bench-lazy-iso-"));
  const lan = new TestLan("10.96.0");
  try {
    const web = join(dir, "web");
    const tree = join(dir, "tree");
    mkdirSync(join(tree, "live"), { recursive: true });
    mkdirSync(web);
    linkSync(parts.kernel, join(tree, `live/vmlinuz-${parts.kernelVersion}`));
    linkSync(parts.initrd, join(tree, `live/initrd.img-${parts.kernelVersion}`));
    linkSync(parts.squashfs, join(tree, "live/filesystem.squashfs"));
    const iso = join(web, "debian-live.iso");
    await runOk("xorriso", [
      "-as",
      "mkisofs",
      "-quiet",
      "-R",
      "-J",
      "-V",
      "DEBIAN_LIVE",
      "-o",
      iso,
      tree,
    ]);
    const isoBytes = statSync(iso).size;
    const squashBytes = statSync(parts.squashfs).size;

    const nginxDir = join(dir, "nginx");
    mkdirSync(nginxDir);
    const accessLog = join(nginxDir, "access.log");
    lan.spawn(
      lan.server,
      "/usr/sbin/nginx",
      ["-c", nginxConfig(web, nginxDir, NGINX_PORT), "-p", nginxDir],
      {},
      { quiet: true },
    );
    await spawnWanProxy(
      (cmd, args) => lan.spawn(lan.server, cmd, args),
      `127.0.0.1:${WAN_PORT}`,
      `127.0.0.1:${NGINX_PORT}`,
    );
    const tap = lan.addTap();
    const rows: Row[] = [];
    const measure = async (name: string, lazy: boolean, memoryMb: number): Promise<void> => {
      console.error(`boot ${name}…`);
      const config = join(dir, `${rows.length}.yaml`);
      writeFileSync(
        config,
        `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
tftp: { enabled: false }
http: { port: 8080 }
state: ${join(dir, `state-${rows.length}`)}
cache: { dir: ${join(dir, `cache-${rows.length}`)} }
entries:
  live: { iso: "http://127.0.0.1:${WAN_PORT}/debian-live.iso", cmdline: "{recipe} console=ttyS0", lazy: ${lazy} }
default: live
`,
      );
      const from = accessLogRequests(accessLog).length;
      const serve = await startServe(lan, config);
      const started = performance.now();
      let result: Row["result"];
      try {
        const out = await bootUntil(
          tapNic(tap, MAC, { model: "e1000" }),
          new RegExp(`${LOGIN.source}|Kernel panic|Out of memory|\\(initramfs\\)`),
          900_000,
          { netns: lan.server, memoryMb },
        );
        const seconds = (performance.now() - started) / 1000;
        const marker = LIVE_MARKER.exec(out);
        result =
          LOGIN.test(out) && marker
            ? { seconds, memTotalKb: Number(marker[3]) }
            : {
                failed: (/Kernel panic[^\n]*|Out of memory[^\n]*|\(initramfs\)/.exec(out) ?? [
                  "no login",
                ])[0].slice(0, 120),
              };
      } catch (err) {
        result = { failed: (err as Error).message.split("\n")[0].slice(0, 120) };
      }
      await stop(serve.child);
      const traffic = accessLogRequests(accessLog).slice(from);
      rows.push({
        name,
        memoryMb,
        result,
        originBytes: traffic.reduce((n, r) => n + r.bytes, 0),
        originRequests: traffic.length,
      });
      const r = rows.at(-1)!;
      console.error(
        `  ${name}: ${"seconds" in r.result ? `${r.result.seconds.toFixed(1)} s` : r.result.failed}, ${(r.originBytes / 1e6).toFixed(1)} MB in ${r.originRequests} requests`,
      );
    };
    await measure("(a) lazy: the ISO over NBD", true, 768);
    await measure("(b) download recipe (fetch= into RAM)", false, 2048);
    await measure("(c) download recipe, 768 MB of RAM", false, 768);

    const [a, b] = rows;
    const secs = (r: Row): string =>
      "seconds" in r.result ? r.result.seconds.toFixed(1) : `failed: ${r.result.failed}`;
    const ratio =
      "seconds" in a.result && "seconds" in b.result
        ? (a.result.seconds / b.result.seconds).toFixed(2)
        : "—";
    return [
      `## Live ISO to the login prompt, lazy vs download: Debian live (live-boot), ISO ${(isoBytes / 1e6).toFixed(0)} MB, squashfs ${(squashBytes / 1e6).toFixed(0)} MB; QEMU TCG through iPXE; origin behind ${TEST_WAN.delayMs * 2} ms RTT / ${TEST_WAN.rateMbit} Mbit/s`,
      "",
      "| scenario | RAM | seconds to login | from origin | requests |",
      "| --- | --- | --- | --- | --- |",
      ...rows.map(
        (r) =>
          `| ${r.name} | ${r.memoryMb} MB | ${secs(r)} | ${(r.originBytes / 1e6).toFixed(1)} MB (${((100 * r.originBytes) / isoBytes).toFixed(0)}% of the ISO) | ${r.originRequests} |`,
      ),
      "",
      `- lazy origin bytes: ${((100 * a.originBytes) / isoBytes).toFixed(0)}% of the ISO (goal: at most 40%)`,
      `- lazy/download time to login: ${ratio} (goal: at most 0.7)`,
    ].join("\n");
  } finally {
    await lan.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
