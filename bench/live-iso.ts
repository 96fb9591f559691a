// Benchmark: a 300 MB live ISO (casper layout: kernel, 60 MB initrd, squashfs) on nginx behind an
// emulated WAN (20 ms each way, 50 Mbit/s), in one run:
//   (a) curl downloads the whole ISO (what you do before you can boot it without inetboot)
//   (b) inetboot serve, cold: kernel + initrd extracted by Range and served (boot can start)
//   (c) the booted system's `url=` fetch of the whole ISO through inetboot, after (b), vs curl
//       straight from the origin through the same WAN
//   (d) the same fetch again (every block cached), vs nginx serving the ISO file on loopback
//   (e) the whole-ISO checks over the cached copy — against a sha256, and against a detached
//       OpenPGP signature (gpgv fed as the ISO streams) — vs sha256sum and gpgv on the file
// Reports seconds, MB/s and bytes at the origin. Not a timed test.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openCachedUrl } from "../src/block/range-cache-device.ts";
import { ISO_BLOCK_SIZE } from "../src/iso/iso-source.ts";
import { verifyWholeIso } from "../src/iso/live-iso.ts";
import { loadIsoSignature } from "../src/iso/signed-checksums.ts";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { hostKernelPaths } from "../test/debian-rootfs.ts";
import { runOk, textLike } from "../test/helpers.ts";
import { accessLogRequests, startNginxProcess } from "../test/nginx.ts";
import { spawnWanProxy, TEST_WAN } from "../test/wan-proxy.ts";

const WAN_PORT = 8191;

/**
 * GETs `url` to the end with curl (a process of its own, as a booting machine is: the client's
 * work never competes with the server's event loop); seconds and bytes as curl counts them.
 */
async function download(url: string): Promise<{ seconds: number; bytes: number }> {
  const r = await runOk("curl", [
    "-sS",
    "--fail",
    "-o",
    "/dev/null",
    "-w",
    "%{time_total} %{size_download}",
    url,
  ]);
  const [seconds, bytes] = r.stdout.trim().split(" ").map(Number);
  return { seconds, bytes };
}

/** The fastest of `n` downloads of each URL, taken in turns (short runs on loopback are noisy). */
async function bestOf(n: number, urls: string[]): Promise<{ seconds: number; bytes: number }[]> {
  const best: { seconds: number; bytes: number }[] = [];
  for (let i = 0; i < n; i++) {
    for (const [k, url] of urls.entries()) {
      const r = await download(url);
      if (!best[k] || r.seconds < best[k].seconds) best[k] = r;
    }
  }
  return best;
}

const mbps = (r: { seconds: number; bytes: number }): number => r.bytes / 1e6 / r.seconds;

/** Seconds of the fastest of `n` runs of `f` over `bytes` bytes. */
async function timed(
  n: number,
  bytes: number,
  f: () => Promise<unknown>,
): Promise<{ seconds: number; bytes: number }> {
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return { seconds: best, bytes };
}

/**
 * (e)/(f): the checks `sha256:` and `signature:` run over the block cache the server filled,
 * each with a fresh mark (so the whole ISO is read), against the standard tools on the file.
 */
async function benchChecks(dir: string, iso: string, origin: string) {
  const size = statSync(iso).size;
  const sha = (await runOk("sha256sum", [iso])).stdout.split(" ")[0];
  const home = join(dir, "gnupg");
  mkdirSync(home, { mode: 0o700 });
  const gpg = (...args: string[]) =>
    runOk("gpg", ["--homedir", home, "--batch", "--yes", "--quiet", ...args]);
  await gpg(
    "--passphrase",
    "",
    "--quick-gen-key",
    "Bench <bench@example.org>",
    "ed25519",
    "sign",
    "never",
  );
  await gpg("--output", join(dir, "key.gpg"), "--export", "Bench <bench@example.org>");
  await gpg("--output", `${iso}.sig`, "--detach-sign", iso);
  // The server's cache as it left it (its block size: another would start the cache afresh).
  const device = await openCachedUrl(origin, join(dir, "state", "cache", "iso"), {
    offline: true,
    blockSize: ISO_BLOCK_SIZE,
  });
  let run = 0;
  const mark = (): string => join(dir, "marks", `m${run++}`);
  try {
    const signature = await loadIsoSignature(
      { url: `${iso}.sig`, keyring: [join(dir, "key.gpg")] },
      { cacheDir: join(dir, "sig-cache") },
    );
    return {
      sha: await timed(3, size, () =>
        verifyWholeIso(device, sha, { source: origin, marker: mark() }),
      ),
      shaPeer: await timed(3, size, () => runOk("sha256sum", [iso])),
      sig: await timed(3, size, () =>
        verifyWholeIso(device, signature, { source: origin, marker: mark() }),
      ),
      sigPeer: await timed(3, size, () =>
        runOk("gpgv", ["--homedir", home, "--keyring", join(dir, "key.gpg"), `${iso}.sig`, iso]),
      ),
    };
  } finally {
    await device.close();
    await runOk("gpgconf", ["--homedir", home, "--kill", "gpg-agent"]).catch(() => undefined);
  }
}

export async function benchLiveIso(): Promise<string> {
  const kit = hostKernelPaths();
  if (!kit) throw new Error("no Debian kernel in /boot (install linux-image-amd64)");
  const dir = mkdtempSync(join(tmpdir(), "inetboot-bench-iso-"));
  mkdirSync(join(dir, "www"));
  mkdirSync(join(dir, "nginx-state"));
  const nginx = await startNginxProcess(join(dir, "www"), join(dir, "nginx-state"));
  const proxy = await spawnWanProxy(
    (cmd, args) => spawn(cmd, args),
    `127.0.0.1:${WAN_PORT}`,
    nginx.url.replace(/^http:\/\/|\/$/g, ""),
  );
  let server: BootServer | null = null;
  try {
    console.error("building the ISO…");
    const tree = join(dir, "tree");
    mkdirSync(join(tree, "casper"), { recursive: true });
    writeFileSync(join(tree, "casper/vmlinuz"), readFileSync(kit.kernel));
    writeFileSync(join(tree, "casper/initrd"), textLike(60_000_000, 3));
    writeFileSync(join(tree, "casper/filesystem.squashfs"), randomBytes(230_000_000));
    const iso = join(dir, "www", "live.iso");
    await runOk("xorriso", ["-as", "mkisofs", "-quiet", "-R", "-J", "-o", iso, tree]);
    rmSync(tree, { recursive: true });
    const size = statSync(iso).size;
    const origin = `http://127.0.0.1:${WAN_PORT}/live.iso`;
    const originBytes = (): number =>
      accessLogRequests(nginx.accessLog)
        .filter((r) => r.path === "/live.iso")
        .reduce((n, r) => n + r.bytes, 0);

    console.error("(a) curl, whole ISO through the WAN…");
    const a = await download(origin);

    console.error("(b) inetboot, kernel + initrd…");
    const before = originBytes();
    const config = parseConfig(
      `http: { port: 0, address: 127.0.0.1 }\nstate: ${dir}/state\nentries:\n  live: { iso: "${origin}" }\ndefault: live\n`,
      join(dir, "serve.yaml"),
    );
    server = new BootServer(config);
    await server.start();
    const base = `http://127.0.0.1:${server.httpPort}`;
    const started = performance.now();
    await (await fetch(`${base}/ipxe/boot?mac=52:54:00:00:00:01`)).text();
    const kernel = await download(`${base}/files/live/kernel`);
    const initrd = await download(`${base}/files/live/initrd/0`);
    const b = {
      seconds: (performance.now() - started) / 1000,
      bytes: kernel.bytes + initrd.bytes,
      origin: originBytes() - before,
    };

    console.error("(c) inetboot, the whole ISO (cold for what (b) did not read)…");
    const c = await download(`${base}/iso/live/live.iso`);
    const cOrigin = originBytes() - before - b.origin;
    console.error("(d) inetboot, the whole ISO again (cached) vs nginx on loopback…");
    // The peer reads the same file under another name, so the origin's count stays inetboot's.
    linkSync(iso, join(dir, "www", "peer.iso"));
    const [d, peer] = await bestOf(5, [`${base}/iso/live/live.iso`, `${nginx.url}peer.iso`]);
    const dOrigin = originBytes() - before - b.origin - cOrigin;
    await server.stop();
    server = null;

    console.error("(e) whole-ISO checks over the cached copy vs sha256sum and gpgv on the file…");
    const checks = await benchChecks(dir, iso, origin);
    const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
    const row = (label: string, r: { seconds: number; bytes: number }): string =>
      `| ${label} | ${r.seconds.toFixed(2)} | ${mbps(r).toFixed(1)} | 0.0 MB |`;
    return [
      `## live ISO by URL: a ${mb(size)} casper ISO on nginx behind ${TEST_WAN.delayMs * 2} ms RTT / ${TEST_WAN.rateMbit} Mbit/s`,
      "",
      "| scenario | seconds | MB/s | from origin |",
      "| --- | --- | --- | --- |",
      `| (a) curl: download the whole ISO before booting | ${a.seconds.toFixed(1)} | ${mbps(a).toFixed(1)} | ${mb(a.bytes)} |`,
      `| (b) inetboot: kernel + initrd extracted by Range, served (the boot can start) | ${b.seconds.toFixed(1)} | ${mbps(b).toFixed(1)} | ${mb(b.origin)} |`,
      `| (c) inetboot: the whole ISO to the booted system (url=), cold except (b)'s blocks | ${c.seconds.toFixed(1)} | ${mbps(c).toFixed(1)} | ${mb(cOrigin)} |`,
      `| (d) inetboot: the whole ISO again, every block cached (best of 5) | ${d.seconds.toFixed(1)} | ${mbps(d).toFixed(1)} | ${mb(dOrigin)} |`,
      `| nginx serving the ISO file on loopback (peer of (d), best of 5) | ${peer.seconds.toFixed(1)} | ${mbps(peer).toFixed(1)} | — |`,
      row("(e) inetboot: the cached ISO checked whole against its sha256 (best of 3)", checks.sha),
      row("sha256sum on the ISO file (peer of (e), best of 3)", checks.shaPeer),
      row(
        "(f) inetboot: the cached ISO checked against its signature, gpgv fed as it streams (best of 3)",
        checks.sig,
      ),
      row("gpgv on the ISO file (peer of (f), best of 3)", checks.sigPeer),
      "",
      `- time until the machine can boot, (b)/(a): ${(b.seconds / a.seconds).toFixed(2)} (kernel and initrd are ${((100 * b.bytes) / size).toFixed(0)}% of the ISO)`,
      `- cold streaming through inetboot vs curl from the origin, (c)/(a) MB/s: ${(mbps(c) / mbps(a)).toFixed(2)}`,
      `- cached serving vs nginx, (d)/nginx MB/s: ${(mbps(d) / mbps(peer)).toFixed(2)}`,
      `- whole-ISO check vs sha256sum, (e)/peer MB/s: ${(mbps(checks.sha) / mbps(checks.shaPeer)).toFixed(2)}; signature check vs gpgv, (f)/peer: ${(mbps(checks.sig) / mbps(checks.sigPeer)).toFixed(2)}`,
      `- origin bytes for (b)+(c)+(d): ${mb(b.origin + cOrigin + dOrigin)} for a ${mb(size)} ISO served seven times`,
    ].join("\n");
  } finally {
    await server?.stop();
    proxy.kill("SIGKILL");
    nginx.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
