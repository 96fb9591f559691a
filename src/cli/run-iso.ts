// `inetboot run` with an ISO (file or URL): a live system boots through its recipe, its files
// served to the guest from a local HTTP server reading the ISO by range; an ISO with no recipe
// (or with --cdrom) boots from its own El Torito record as a CD-ROM read over NBD. A family
// that boots lazily gets the ISO as an NBD export its initrd attaches (with the server's
// initrd overlay), as `inetboot serve` does, so the guest reads only what it needs.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import { BorrowedDevice } from "../block/borrowed-device.ts";
import { buildLiveOverlay } from "../boot/live-overlay.ts";
import { BUNDLE_CPU, bundleRunsOn } from "../boot/nbd-client-bundle.ts";
import { openChunkCache } from "../block/chunk-cache.ts";
import type { ChunkCache } from "../block/chunk-cache.ts";
import { openRawDevice } from "../block/open-stack.ts";
import { RangeCacheDevice } from "../block/range-cache-device.ts";
import { SECTOR } from "../iso/iso-entry.ts";
import { openIsoDevice } from "../iso/iso-source.ts";
import { LiveIso } from "../iso/live-iso.ts";
import { LiveIsoError } from "../iso/live-iso-error.ts";
import type { LiveIsoOptions } from "../iso/live-iso-options.ts";
import { lazyMiss, lazyOf } from "../iso/recipes.ts";
import type { Logger } from "../lib/log.ts";
import { NbdServer } from "../nbd/server.ts";
import { isUrl } from "../store/open-store.ts";
import { UsageError } from "../store/errors.ts";
import { formatBytes } from "../lib/format.ts";
import { createProgressBar } from "./progress.ts";
import { parseBytes } from "./options.ts";
import { runVm } from "./qemu-vm.ts";
import type { VmResult } from "./qemu-vm.ts";
import { allocated, finish, rate } from "./run-common.ts";
import type { RunFlags, RunVmSettings } from "./run-common.ts";

const execFileAsync = promisify(execFile);

/**
 * Whether `source` is an ISO 9660 image (a file or URL with "CD001" at sector 16). A quick look
 * at one descriptor, unlike IsoImage.open, which reads and checks the whole descriptor set.
 */
export async function isIso(source: string, offline: boolean): Promise<boolean> {
  const looksRaw = isUrl(source) || !/\.(json|caibx)$/i.test(source);
  if (!looksRaw) return false;
  if (offline && isUrl(source)) return /\.iso$/i.test(source.replace(/[?#].*$/, ""));
  let device;
  try {
    device = await openRawDevice(source);
  } catch {
    return false; // a store image name, or unreachable: the image path says why
  }
  try {
    return (
      device.size > 17 * SECTOR && (await device.read(16 * SECTOR + 1, 5)).toString() === "CD001"
    );
  } catch {
    return false; // a folder, an unreadable file: not an ISO
  } finally {
    await device.close();
  }
}

/** Where an ISO is cached and how it is checked; a progress bar while it is checked whole. */
function isoOptions(opts: RunFlags, log: Logger): LiveIsoOptions {
  const bar = createProgressBar({
    enabled: true,
    label: opts.isoSignature ? "Checking the ISO's signature" : "Checking the ISO's sha256",
  });
  return {
    cacheDir: join(opts.cache, "iso"),
    space: cacheSpace(opts, log),
    offline: opts.offline,
    sha256: opts.sha256,
    checksums: opts.checksums
      ? {
          url: opts.checksums,
          signature: opts.signature,
          keyring: opts.keyring,
          name: opts.isoName,
        }
      : undefined,
    signature: opts.isoSignature ? { url: opts.isoSignature, keyring: opts.keyring } : undefined,
    onVerifyProgress: (done, total) => {
      bar.update(done, total, "");
      if (done === total) bar.done();
    },
    logger: log,
  };
}

/** The quota of the cache folder, shared by its chunks and ISO blocks. */
function cacheSpace(opts: RunFlags, log: Logger): ChunkCache {
  return openChunkCache(opts.cache, {
    quotaBytes: opts.cacheQuota ? parseBytes(opts.cacheQuota) : undefined,
    logger: log,
  });
}

/** Network bytes and cache use of a cached ISO, for the progress line and the summary. */
function cacheLine(c: RangeCacheDevice["stats"] | null, size: number, seconds?: number): string {
  if (!c) return "local file, nothing fetched";
  const speed = seconds === undefined ? "" : ` (${rate(c.fetchedBytes, seconds)})`;
  return `${formatBytes(c.fetchedBytes)} fetched${speed}; ${c.hits} cached blocks read; ${formatBytes(c.cachedBytes)} of ${formatBytes(size)} cached`;
}

/** Boots an ISO from its El Torito record: the ISO is a CD-ROM QEMU reads over NBD. */
async function runCdrom(
  source: string,
  opts: RunFlags,
  vm: RunVmSettings,
  drives: string[],
  log: Logger,
): Promise<void> {
  const { device } = await openIsoDevice(source, isoOptions(opts, log));
  const stats = device instanceof RangeCacheDevice ? device.stats : null;
  const work = mkdtempSync(join(tmpdir(), "inetboot-run-"));
  const socket = join(work, "nbd.sock");
  const server = new NbdServer({
    exports: [{ name: "cdrom", description: source, device }],
    logger: log,
  });
  await server.listen({ path: socket });
  console.error(`Booting ${source} as a CD-ROM in QEMU${opts.offline ? " (offline)" : ""}`);
  const started = performance.now();
  let result: VmResult;
  try {
    result = await runVm({
      ...vm,
      boot: "d",
      cdrom: `nbd+unix:///cdrom?socket=${socket}`,
      drives,
      progress: () => `  ${cacheLine(stats, device.size, (performance.now() - started) / 1000)}`,
    });
  } finally {
    await server.close();
    await device.close();
    rmSync(work, { recursive: true, force: true });
  }
  finish(source, result, [
    `Ran ${source} as a CD-ROM for ${result.seconds.toFixed(1)} s${vm.until ? ` (to ${JSON.stringify(opts.until)})` : ""}`,
    `  network    ${cacheLine(stats, device.size)}${stats ? ` (${opts.cache})` : ""}`,
    ...(opts.disk
      ? [`  disk file  ${opts.disk}: ${formatBytes(await allocated(opts.disk))} on disk`]
      : []),
  ]);
}

/**
 * The lazy way for `iso`: an NBD server on loopback exporting it as "iso" (QEMU's user-mode
 * network forwards the guest's 10.0.2.2 to it) and the initrd overlay its family needs; null,
 * with the reason said, when the family has none or the overlay cannot be built here.
 */
async function lazyBoot(
  iso: LiveIso,
  work: string,
  log: Logger,
): Promise<{
  server: NbdServer;
  port: number;
  overlay: string | null;
  device: BorrowedDevice;
} | null> {
  const recipe = lazyOf(iso.recipe);
  if (!recipe) {
    console.error(`The guest downloads the ISO's live system: ${lazyMiss(iso.recipe)}`);
    return null;
  }
  if (recipe.port !== undefined) {
    // Its client names no port, and this server's port is not free to choose.
    console.error(
      `The guest downloads the ISO's live system: ${iso.recipe.family}'s NBD hook reaches port ${recipe.port} only`,
    );
    return null;
  }
  let overlay: string | null = null;
  if (recipe.hook) {
    try {
      overlay = join(work, "overlay.cpio");
      await writeFile(overlay, await buildLiveOverlay(recipe.hook));
    } catch (err) {
      console.error(`The guest downloads the ISO's live system: ${(err as Error).message}`);
      return null;
    }
  }
  const device = new BorrowedDevice(iso.device);
  const server = new NbdServer({
    exports: [{ name: "iso", description: iso.source, device }],
    logger: log,
  });
  const bound = await server.listen({ host: "127.0.0.1", port: 0 });
  return { server, port: "port" in bound ? bound.port : 0, overlay, device };
}

export async function runIso(
  source: string,
  opts: RunFlags,
  vm: RunVmSettings,
  log: Logger,
): Promise<void> {
  if (opts.kernel) {
    throw new UsageError(
      "an ISO boots through its recipe: --kernel is for disk images (use --cmdline to add to the recipe's command line)",
    );
  }
  const drives: string[] = [];
  if (opts.disk) {
    // A disk for the live system to install to: a qcow2 file that grows as the guest writes.
    if (!existsSync(opts.disk)) {
      await mkdir(dirname(resolve(opts.disk)), { recursive: true });
      await execFileAsync("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        opts.disk,
        opts.diskSize,
      ]).catch((err: Error & { stderr?: string }) => {
        throw new Error(`cannot create ${opts.disk}: ${err.stderr?.trim() || err.message}`, {
          cause: err,
        });
      });
    }
    drives.push(`file=${opts.disk},format=qcow2,if=virtio`);
  }
  if (opts.cdrom) return runCdrom(source, opts, vm, drives, log);
  let iso: LiveIso;
  try {
    iso = await LiveIso.open(source, {
      ...isoOptions(opts, log),
      cmdline: `{recipe} ${opts.cmdline ?? ""}`,
    });
  } catch (err) {
    // No live-system recipe (another OS, an installer, a rescue ISO): boot it from its own
    // El Torito boot record as a CD-ROM instead, read lazily through the same cache.
    if (!(err instanceof LiveIsoError) || err.found.length === 0) throw err;
    console.error(
      `${source}: no live-system recipe fits (casper, live-boot, dracut, archiso, KNOPPIX layouts); booting it as a CD-ROM from its own boot record`,
    );
    return runCdrom(source, opts, vm, drives, log);
  }
  // What the booted system fetches (the ISO, its squashfs) comes from here, by range.
  const http = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const rest = path.startsWith("/iso/") ? path.slice(5) : "";
    iso
      .send(req, res, rest)
      .then((bytes) => {
        if (bytes < 0) res.writeHead(404).end(`${source} has no ${rest}\n`);
      })
      .catch((err: Error) => {
        log.error({ err: err.message, path }, "cannot serve from the ISO");
        if (!res.headersSent) res.writeHead(502).end(`${err.message}\n`);
        else res.destroy();
      });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const port = (http.address() as AddressInfo).port;
  const work = mkdtempSync(join(tmpdir(), "inetboot-run-"));
  let result: VmResult;
  let lazy: Awaited<ReturnType<typeof lazyBoot>> = null;
  const started = performance.now();
  try {
    const kernel = await iso.extract(iso.recipe.kernel);
    const initrds = [];
    for (const p of iso.recipe.initrd) initrds.push((await iso.extract(p)).path);
    // 10.0.2.2 is the host as QEMU's user-mode network shows it.
    const base = `http://10.0.2.2:${port}/iso`;
    // The overlay carries this host's nbd-client: a guest of another CPU downloads instead.
    const foreign = !bundleRunsOn(opts.arch) && lazyOf(iso.recipe)?.hook;
    if (foreign && !opts.download) {
      console.error(
        `${source}: the ${opts.arch} guest downloads the ISO (the NBD overlay carries this host's ${BUNDLE_CPU} nbd-client)`,
      );
    }
    lazy = opts.download || foreign ? null : await lazyBoot(iso, work, log);
    if (lazy?.overlay) initrds.push(lazy.overlay);
    console.error(
      `Booting ${source} (${iso.recipe.family}: ${iso.recipe.description}${lazy ? ", the ISO attached over NBD" : ", downloaded by the guest"}) in QEMU${opts.offline ? " (offline)" : ""}`,
    );
    result = await runVm({
      ...vm,
      kernel: kernel.path,
      initrd: initrds,
      drives,
      cmdline:
        (lazy && iso.lazyCmdline(base, { host: "10.0.2.2", port: lazy.port, name: "iso" })) ||
        iso.cmdline(base),
      progress: () =>
        `  ${cacheLine(iso.cacheStats, iso.device.size, (performance.now() - started) / 1000)}`,
    });
  } finally {
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
    await lazy?.server.close();
    await iso.close();
    rmSync(work, { recursive: true, force: true });
  }
  finish(source, result, [
    `Ran ${source} for ${result.seconds.toFixed(1)} s${vm.until ? ` (to ${JSON.stringify(opts.until)})` : ""}`,
    `  recipe     ${iso.recipe.family}: ${iso.recipe.kernel} ${iso.recipe.initrd.join(" ")}`,
    `  medium     ${lazy ? `the ISO over NBD (${formatBytes(lazy.device.bytesRead)} read by the guest)` : `downloaded by the guest${iso.httpBytes ? ` (${formatBytes(iso.httpBytes)})` : ""}`}`,
    `  network    ${cacheLine(iso.cacheStats, iso.device.size)}${iso.cacheStats ? ` (${opts.cache})` : ""}`,
    ...(opts.disk
      ? [`  disk file  ${opts.disk}: ${formatBytes(await allocated(opts.disk))} on disk`]
      : []),
  ]);
}
