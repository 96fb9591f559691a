// Benchmark: Internet boot of a systemd Debian root disk, from QEMU start (iPXE ROM, DHCP, TFTP,
// kernel + initrd over HTTP from inetboot serve) to the login prompt on the serial console, in
// one run, with the origin (nginx) behind an emulated WAN (20 ms each way, 50 Mbit/s):
//   (a) nbdkit curl + cow filter: the raw image by Range from the same nginx (the httpfs way)
//   (b) download the whole raw image first (curl through the WAN), then boot it as in (f)
//   (c) inetboot, cold cache, no profile
//   (d1) inetboot, cold cache, release with boot profile + a boot pack of whole chunks
//   (d) inetboot, cold cache, release with boot profile + a boot pack with pieces
//   (e) inetboot, warm cache (the cache (d) left; the server restarted)
//   (f) the raw image as a local file (nbdkit file + cow filter, over the same LAN NBD path)
// Reports time, bytes and requests at the origin, and occupancy (bytes the machine read that had
// to be fetched, all-zero chunks left out / bytes of the chunks and pieces fetched). Not a timed
// test.
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { debianRootfs, GUEST_HOSTNAME, hostKernelPaths, packTree } from "../test/debian-rootfs.ts";
import { inetbootOk } from "../test/helpers.ts";
import { startServe, TestLan } from "../test/netns.ts";
import type { ServeProcess } from "../test/netns.ts";
import { accessLogRequests, nginxConfig } from "../test/nginx.ts";
import { bootUntil, tapNic } from "../test/qemu.ts";
import { spawnWanProxy, TEST_WAN } from "../test/wan-proxy.ts";
import { stop } from "./stop-child.ts";

const MAC = "52:54:00:12:34:99";
const LOGIN = new RegExp(`${GUEST_HOSTNAME} login:`);
const CMDLINE = "console=ttyS0 panic=-1";
const NGINX_PORT = 8090;
const WAN_PORT = 8091;
const NBDKIT_PORT = 10810;

interface Row {
  name: string;
  seconds: number;
  /** Seconds spent before the boot (the download in (b)). */
  before: number;
  originBytes: number;
  originRequests: number;
  occupancy: number | null;
  note: string;
}

/** Requests and body bytes nginx logged after line `from`. */
function originTraffic(
  accessLog: string,
  from: number,
): { requests: number; bytes: number; lines: number } {
  const all = accessLogRequests(accessLog);
  const bytes = all.slice(from).reduce((n, r) => n + r.bytes, 0);
  return { requests: all.length - from, bytes, lines: all.length };
}

export async function benchInternetBoot(): Promise<string> {
  const kit = hostKernelPaths();
  if (!kit)
    throw new Error(
      "no Debian kernel + initrd in /boot (install linux-image-amd64 and nbd-client)",
    );
  const dir = mkdtempSync(join(tmpdir(), "inetboot-bench-wan-"));
  const lan = new TestLan("10.97.0");
  try {
    // The image: systemd Debian in 1 GiB of ext4, packed and signed.
    console.error("building the image…");
    const { image, store, key } = await packTree(debianRootfs(), dir, "debian");
    const web = join(dir, "web");
    mkdirSync(web);
    cpSync(store, join(web, "plain"), { recursive: true });
    cpSync(image, join(web, "root.img"));

    // The profile, recorded by booting once (QEMU user network, local store), then published.
    console.error("recording the boot profile…");
    const profile = join(dir, "boot.profile");
    await inetbootOk([
      "profile",
      "record",
      "debian",
      "--store",
      store,
      "--trust",
      `${key}.pub`,
      "--kernel",
      kit.kernel,
      "--initrd",
      kit.initrd,
      "--cmdline",
      CMDLINE,
      "--out",
      profile,
      "--timeout",
      "600",
    ]);
    // The same profile published twice: a pack of whole chunks (format 1) and one with pieces.
    const wholeStore = join(dir, "store-whole");
    cpSync(store, wholeStore, { recursive: true });
    const optimize = (target: string, ...extra: string[]): Promise<{ stdout: string }> =>
      inetbootOk([
        "optimize",
        "debian",
        "--profile",
        profile,
        "--store",
        target,
        "--key",
        key,
        ...extra,
      ]);
    const whole = await optimize(wholeStore, "--whole-chunks");
    cpSync(wholeStore, join(web, "opt-whole"), { recursive: true });
    const opt = await optimize(store);
    cpSync(store, join(web, "opt"), { recursive: true });

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
    const origin = `http://127.0.0.1:${WAN_PORT}`;
    const tap = lan.addTap();
    const qemuArgs = tapNic(tap, MAC);

    const config = (name: string, entry: string): string => {
      const path = join(dir, `${name}.yaml`);
      writeFileSync(
        path,
        `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
http: { port: 8080 }
state: ${join(dir, `state-${name}`)}
cache: { dir: ${join(dir, `cache-${name}`)} }
entries:
  root:
${entry}
default: root
`,
      );
      return path;
    };
    const kernelEntry = (nbdroot: string): string =>
      `    kernel: ${kit.kernel}\n    initrd: [${kit.initrd}]\n    cmdline: ${CMDLINE} root=/dev/nbd0 nbdroot=${nbdroot} ip=dhcp`;
    const imageEntry = (storeUrl: string): string =>
      `    image: { name: debian, store: ${storeUrl}, trust: [${key}.pub] }\n    kernel: ${kit.kernel}\n    initrd: [${kit.initrd}]\n    cmdline: ${CMDLINE}\n    disk: ephemeral`;

    const rows: Row[] = [];
    const measure = async (
      name: string,
      configPath: string,
      options: { before?: () => Promise<number>; nbdkit?: string[]; note?: string } = {},
    ): Promise<void> => {
      console.error(`boot ${name}…`);
      const from = originTraffic(accessLog, 0).lines;
      const before = options.before ? await options.before() : 0;
      const nbdkit = options.nbdkit
        ? lan.spawn(
            lan.server,
            "nbdkit",
            ["-f", "-p", String(NBDKIT_PORT), "-i", lan.serverAddress, ...options.nbdkit],
            {},
            { quiet: true },
          )
        : null;
      if (nbdkit) await new Promise((r) => setTimeout(r, 1000));
      const serve: ServeProcess = await startServe(lan, configPath);
      const started = performance.now();
      await bootUntil(qemuArgs, LOGIN, 900_000, { netns: lan.server, memoryMb: 1024 });
      const seconds = (performance.now() - started) / 1000;
      let occupancy: number | null = null;
      try {
        const images = JSON.parse(
          lan.exec(lan.server, "curl", ["-sf", "http://127.0.0.1:8080/api/images"]),
        ) as { occupancy: number | null }[];
        occupancy = images[0]?.occupancy ?? null;
      } catch {
        // not an image entry
      }
      await stop(serve.child);
      if (nbdkit) await stop(nbdkit);
      const traffic = originTraffic(accessLog, from);
      rows.push({
        name,
        seconds,
        before,
        originBytes: traffic.bytes,
        originRequests: traffic.requests,
        occupancy,
        note: options.note ?? "",
      });
      console.error(
        `  ${name}: ${(before + seconds).toFixed(1)} s, ${(traffic.bytes / 1e6).toFixed(1)} MB in ${traffic.requests} requests`,
      );
    };

    await measure(
      "(a) nbdkit curl (Range requests of the raw image)",
      config("a", kernelEntry(`${lan.serverAddress}:${NBDKIT_PORT}/root`)),
      {
        nbdkit: ["--filter=cow", "curl", `url=${origin}/root.img`],
      },
    );
    const local = join(dir, "downloaded.img");
    await measure(
      "(b) download the whole image, then boot",
      config("b", kernelEntry(`${lan.serverAddress}:${NBDKIT_PORT}/root`)),
      {
        before: async () => {
          const t = performance.now();
          const curl = lan.spawn(lan.server, "curl", ["-sf", "-o", local, `${origin}/root.img`]);
          const code = await new Promise((r) => curl.once("exit", r));
          if (code !== 0) throw new Error(`curl exited ${String(code)} downloading the image`);
          return (performance.now() - t) / 1000;
        },
        nbdkit: ["--filter=cow", "file", local],
      },
    );
    rmSync(local, { force: true });
    await measure(
      "(c) inetboot, cold cache, no profile",
      config("c", imageEntry(`${origin}/plain`)),
    );
    await measure(
      "(d1) inetboot, cold cache, profile + boot pack of whole chunks",
      config("d1", imageEntry(`${origin}/opt-whole`)),
    );
    const dConfig = config("d", imageEntry(`${origin}/opt`));
    await measure("(d) inetboot, cold cache, profile + boot pack with pieces", dConfig);
    await measure("(e) inetboot, warm cache (server restarted)", dConfig);
    await measure(
      "(f) raw image as a local file (nbdkit file)",
      config("f", kernelEntry(`${lan.serverAddress}:${NBDKIT_PORT}/root`)),
      {
        nbdkit: ["--filter=cow", "file", image],
      },
    );

    const by = (p: string): Row => rows.find((r) => r.name.startsWith(p))!;
    const total = (r: Row): number => r.before + r.seconds;
    const [a, d, d1, e, f] = [by("(a)"), by("(d) "), by("(d1)"), by("(e)"), by("(f)")];
    const pct = (x: number | null): string => (x === null ? "—" : `${(x * 100).toFixed(0)}%`);
    return [
      `## Internet boot: systemd Debian (1 GiB ext4, chunks 8K:32K:128K) to the login prompt, QEMU TCG through iPXE, origin behind ${TEST_WAN.delayMs * 2} ms RTT / ${TEST_WAN.rateMbit} Mbit/s`,
      "",
      "| scenario | seconds to login | of which before boot | from origin | requests | occupancy |",
      "| --- | --- | --- | --- | --- | --- |",
      ...rows.map(
        (r) =>
          `| ${r.name} | ${total(r).toFixed(1)} | ${r.before.toFixed(1)} | ${(r.originBytes / 1e6).toFixed(1)} MB | ${r.originRequests} | ${pct(r.occupancy)} |`,
      ),
      "",
      `- (d)/(a) time: ${(total(d) / total(a)).toFixed(2)} (goal: at most 0.5)`,
      `- occupancy of (d): ${pct(d.occupancy)}, of (d1): ${pct(d1.occupancy)}; requests ${d.originRequests} and ${d1.originRequests} (goal: at least 90% at no more requests; HTTP-FUSE CLOOP measured 30%)`,
      `- (e)/(f) time: ${(total(e) / total(f)).toFixed(2)} (goal: within 1.2)`,
      ...[whole, opt].map(
        (o) =>
          `- optimize: ${
            o.stdout
              .split("\n")
              .find((l) => l.includes("boot pack"))
              ?.trim() ?? ""
          }`,
      ),
    ].join("\n");
  } finally {
    await lan.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
