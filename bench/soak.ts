// Soak: one real machine (QEMU, TCG) boots a systemd Debian image entry to its login prompt
// through `inetboot serve` (full DHCP, iPXE, kernel + initrd over HTTP, root disk over NBD)
// while a hostile host on the same LAN, from 16 addresses, sends 10,000 plan requests for
// distinct MACs (each with a 2 KB host name), 2,000 TFTP read requests it never acknowledges
// and 1,000 NBD connections that stall or only list. Reports whether the machine booted, its
// boot time against a quiet LAN (same server, same cache), the server's peak RSS and open
// files, the longest event-loop stall (its own gauge, sampled through the load), and what the
// bounds turned away. Bounded: every part ends by itself. Not a timed test.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { debianRootfs, GUEST_HOSTNAME, hostKernelPaths, packTree } from "../test/debian-rootfs.ts";
import { startServe, TestLan } from "../test/netns.ts";
import { bootUntil, tapNic } from "../test/qemu.ts";

const MAC = "52:54:00:12:34:98";
const LOGIN = new RegExp(`${GUEST_HOSTNAME} login:`);
const PLANS = 10_000;
const RRQS = 2_000;
const NBD = 1_000;
/** What the server may hold at its peak with all of that at once (stated, then checked). */
const RSS_BOUND = 400e6;
const STALL_BOUND = 0.1;

function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

export async function benchSoak(): Promise<string> {
  const kit = hostKernelPaths();
  if (!kit)
    throw new Error(
      "no Debian kernel + initrd in /boot (install linux-image-amd64 and nbd-client)",
    );
  const dir = mkdtempSync(join(tmpdir(), "inetboot-bench-soak-"));
  const lan = new TestLan("10.96.0");
  try {
    console.error("building the image…");
    const { store, key } = await packTree(debianRootfs(), dir, "debian");
    const tftpRoot = join(dir, "tftp");
    mkdirSync(tftpRoot);
    writeFileSync(join(tftpRoot, "file.bin"), Buffer.alloc(1 << 20, 5));
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
tftp: { enabled: true, root: ${tftpRoot} }
http: { port: 8080 }
state: ${join(dir, "state")}
cache: { dir: ${join(dir, "cache")} }
entries:
  debian:
    image: { name: debian, store: ${store}, trust: [${key}.pub] }
    kernel: ${kit.kernel}
    initrd: [${kit.initrd}]
    cmdline: console=ttyS0 panic=-1
    disk: ephemeral
default: debian
`,
    );
    const serve = await startServe(lan, config);
    const pid = serve.child.pid as number;
    const tap = lan.addTap();
    const boot = async (): Promise<number> => {
      const started = performance.now();
      await bootUntil(tapNic(tap, MAC), LOGIN, 900_000, { netns: lan.server, memoryMb: 1024 });
      return (performance.now() - started) / 1000;
    };
    console.error("boot on a quiet LAN (fills the cache)…");
    await boot();
    const quiet = await boot();
    const rssBefore = peakRss(pid);

    // The hostile host: 16 addresses, its own process.
    const host = lan.addHost(`${lan.prefix}.60`);
    const addresses = Array.from({ length: 16 }, (_, i) => `${lan.prefix}.${60 + i}`);
    for (const a of addresses.slice(1))
      lan.exec(host.ns, "ip", ["addr", "add", `${a}/24`, "dev", "eth0"]);
    console.error("boot under load…");
    const load = lan.spawn(host.ns, process.execPath, [
      new URL("soak-load.ts", import.meta.url).pathname,
      lan.serverAddress,
      addresses.join(","),
      String(PLANS),
      String(RRQS),
      String(NBD),
    ]);
    let out = "";
    load.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    const loaded = new Promise<void>((r) => load.once("exit", () => r()));
    let booted = true;
    let underLoad = 0;
    try {
      underLoad = await boot();
    } catch (err) {
      booted = false;
      console.error(`the machine did not boot under load: ${(err as Error).message}`);
    }
    await loaded;
    const r = JSON.parse(out.trim().split("\n").pop() ?? "{}") as {
      seconds: number;
      plans: { statuses: Record<string, number>; p50: number; p99: number };
      tftp: { data: number; busy: number; other: number; errors: Record<string, number> };
      nbd: { closedByServer: number; listed: number; errors: number };
      health: { maxStall: number; maxRss: number; maxFds: number };
    };
    const peak = peakRss(pid);
    const mb = (b: number): string => `${(b / 1e6).toFixed(0)} MB`;
    const lines = [
      `## soak: a machine boots while one host floods the LAN (${PLANS} plans, ${RRQS} TFTP RRQs, ${NBD} NBD connects)`,
      "",
      "| measure | value | bound |",
      "| --- | --- | --- |",
      `| machine reached login under load | ${booted ? "yes" : "NO"} | yes |`,
      `| boot to login: quiet LAN / under load | ${quiet.toFixed(1)} s / ${underLoad.toFixed(1)} s (${(underLoad / quiet).toFixed(2)}x) | — |`,
      `| load duration | ${r.seconds.toFixed(1)} s | — |`,
      `| plan requests: answers | ${JSON.stringify(r.plans.statuses)} | — |`,
      `| plan latency p50 / p99 | ${r.plans.p50.toFixed(0)} ms / ${r.plans.p99.toFixed(0)} ms | — |`,
      `| TFTP RRQs: transfers started / refused busy / other errors | ${r.tftp.data} / ${r.tftp.busy} / ${r.tftp.other} ${JSON.stringify(r.tftp.errors)} | ≤ 1,024 at once (the open-file limit allowing), 8 per client, 2,048 waiting |`,
      `| NBD connects: closed by the server / listed | ${r.nbd.closedByServer} / ${r.nbd.listed} | 512, 16 per address, 10 s handshake |`,
      `| server peak RSS (VmHWM): before the load / after | ${mb(rssBefore)} / ${mb(peak)} | ${mb(RSS_BOUND)} |`,
      `| server open files (peak sampled) | ${r.health.maxFds} | — |`,
      `| longest event-loop stall during the load | ${(r.health.maxStall * 1000).toFixed(0)} ms | ${STALL_BOUND * 1000} ms |`,
      "",
      `- verdict: ${booted && peak <= RSS_BOUND && r.health.maxStall <= STALL_BOUND ? "within every bound" : "OUT OF BOUNDS (see the rows above)"}`,
    ];
    return lines.join("\n");
  } finally {
    await lan.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
