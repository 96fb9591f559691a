// `inetboot run`: a VM from a streamed image, VMSeed-style. The image is attached to QEMU
// through a private NBD export (verified chunk cache below, the VM's own copy-on-write disk
// file above), so the local disk starts at a few MB and grows only with what the guest reads
// or writes; a re-run boots from the cache. A live ISO (file or URL) boots through its recipe,
// its files served to the guest from a local HTTP server reading the ISO by range.
import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import { InvalidArgumentError } from "commander";
import type { Command } from "commander";
import { cacheCoverage, openChunkCache } from "../block/chunk-cache.ts";
import type { ChunkCache } from "../block/chunk-cache.ts";
import { COW_BLOCK_SIZE, CowDevice } from "../block/cow-device.ts";
import { openDeviceStack, openRawDevice } from "../block/open-stack.ts";
import type { DeviceStack } from "../block/open-stack.ts";
import { profileChunks, readProfile } from "../block/profile.ts";
import type { ProfileEntry } from "../block/profile.ts";
import { TraceDevice } from "../block/trace-device.ts";
import { RangeCacheDevice } from "../block/range-cache-device.ts";
import { LiveIso, LiveIsoError, openIsoDevice } from "../iso/live-iso.ts";
import type { LiveIsoOptions } from "../iso/live-iso.ts";
import { createLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { NbdServer } from "../nbd/server.ts";
import { isUrl } from "../store/store-reader.ts";
import { UsageError } from "../store/errors.ts";
import { formatBytes } from "../lib/format.ts";
import { createProgressBar } from "./progress.ts";
import { collect, parseBytes, positiveInt } from "./options.ts";
import { runVm } from "./qemu-vm.ts";
import { addTrustOptions, trustPolicy, VM_TRUST_HELP } from "./trust-options.ts";
import type { TrustFlags } from "./trust-options.ts";
import type { VmOptions, VmResult } from "./qemu-vm.ts";

const execFileAsync = promisify(execFile);

interface RunFlags extends TrustFlags {
  store: string[];
  cache: string;
  cacheQuota?: string;
  sha256?: string;
  checksums?: string;
  signature?: string;
  isoSignature?: string;
  keyring: string[];
  isoName?: string;
  disk?: string;
  diskSize: string;
  fresh?: boolean;
  memory: number;
  cpus: number;
  accel: string;
  kernel?: string;
  initrd: string[];
  cmdline: string;
  offline?: boolean;
  console?: boolean;
  cdrom?: boolean;
  display: string;
  until?: string;
  timeout?: number;
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

function sha256Hex(value: string): string {
  if (!/^[0-9a-f]{64}$/i.test(value)) throw new InvalidArgumentError("expected 64 hex digits");
  return value.toLowerCase();
}

/** The quota of the cache folder, shared by its chunks and ISO blocks. */
function cacheSpace(opts: RunFlags, log: Logger): ChunkCache {
  return openChunkCache(opts.cache, {
    quotaBytes: opts.cacheQuota ? parseBytes(opts.cacheQuota) : undefined,
    logger: log,
  });
}

function defaultCache(): string {
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "inetboot");
}

/** Whether `source` is an ISO 9660 image (a file or URL with "CD001" at sector 16). */
async function isIso(source: string, offline: boolean): Promise<boolean> {
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
    return device.size > 17 * 2048 && (await device.read(16 * 2048 + 1, 5)).toString() === "CD001";
  } catch {
    return false; // a folder, an unreadable file: not an ISO
  } finally {
    await device.close();
  }
}

/** The disk file's bytes on disk (it is sparse: only what the guest read or wrote). */
async function allocated(path: string): Promise<number> {
  const st = await stat(path).catch(() => null);
  return st ? st.blocks * 512 : 0;
}

function rate(bytes: number, seconds: number): string {
  return seconds > 0 ? `${(bytes / 1e6 / seconds).toFixed(1)} MB/s` : "";
}

export function registerRunCommand(program: Command): void {
  const run = program
    .command("run")
    .description(
      "start a QEMU VM from a streamed image (lazy, verified, cached; writes go to a growing local disk file) or boot a live ISO file or URL through its recipe",
    )
    .argument("<source>", "NAME[@REV] from --store, a raw image or ISO file, or an http(s) URL")
    .option("--store <dir|url>", "store to read from; repeat for mirrors", collect, [])
    .option("--cache <dir>", "chunk and ISO cache (re-runs boot from it)", defaultCache())
    .option(
      "--cache-quota <size>",
      "cache size limit, chunks and ISO blocks together, e.g. 20G (default 10G, or what the cache was given before)",
    )
    .option("--disk <file>", "the VM's copy-on-write disk file (default: in the cache folder)")
    .option("--fresh", "start the disk file over (discard what the VM wrote)")
    .option(
      "--disk-size <size>",
      "with an ISO and --disk: the size of a new disk (qcow2, grows as the guest writes)",
      "20G",
    )
    .option("--memory <MB>", "guest memory", positiveInt, 1024)
    .option("--cpus <n>", "guest CPUs", positiveInt, 1)
    .option("--accel <kvm|tcg>", "QEMU accelerator (kvm where /dev/kvm works)", "tcg")
    .option("--kernel <file>", "boot this kernel with the image as /dev/vda (a filesystem image)")
    .option("--initrd <file>", "initrd for --kernel (repeatable)", collect, [])
    .option("--cmdline <text>", "kernel command line (added to an ISO recipe's)", "console=ttyS0")
    .option("--offline", "never use the network; say what is missing if the cache cannot boot")
    .option(
      "--sha256 <hex>",
      "an ISO's SHA-256 as its publisher lists it: the whole ISO is checked before it boots (once per cached copy)",
      sha256Hex,
    )
    .option(
      "--checksums <url|file>",
      "the publisher's signed checksum list (SHA256SUMS, CHECKSUM): the ISO's SHA-256 comes from it, checked as --sha256 is",
    )
    .option(
      "--signature <url|file>",
      "the list's detached signature (SHA256SUMS.gpg, SHA256SUMS.sign); not needed when it is clearsigned",
    )
    .option(
      "--keyring <file>",
      "the publisher's public key (binary or armoured) that signs the list (repeatable)",
      collect,
      [],
    )
    .option("--iso-name <name>", "the ISO's name in the list (default: the last part of SOURCE)")
    .option(
      "--iso-signature <url|file>",
      "the publisher's detached signature over the whole ISO (Arch: ISO.sig), checked with --keyring as the ISO is read",
    )
    .option(
      "--cdrom",
      "boot an ISO from its own boot record as a CD-ROM (the default when no live-system recipe fits)",
    )
    .option("--console", "attach the serial console to this terminal (Ctrl-] stops the VM)")
    .option(
      "--display <kind>",
      "a QEMU window: gtk, sdl or vnc=:N (default none: serial only)",
      "none",
    )
    .option("--until <regex>", "stop the VM once the console prints this (scripted runs)")
    .option("--timeout <seconds>", "stop the VM after this long", positiveInt);
  addTrustOptions(run, VM_TRUST_HELP).action(async (source: string, opts: RunFlags) => {
    const log = createLogger("run");
    await mkdir(opts.cache, { recursive: true });
    const vm: Omit<VmOptions, "kernel" | "initrd" | "cmdline" | "drives" | "progress"> = {
      accel: opts.accel,
      memoryMb: opts.memory,
      cpus: opts.cpus,
      console: opts.console,
      display: opts.display,
      until: opts.until ? new RegExp(opts.until, "m") : undefined,
      timeoutSeconds: opts.timeout,
    };
    const checks = [opts.sha256, opts.checksums, opts.isoSignature].filter(Boolean);
    if (checks.length > 1) {
      throw new UsageError("give one of --sha256, --checksums or --iso-signature");
    }
    if ((opts.checksums || opts.isoSignature) && opts.keyring.length === 0) {
      throw new UsageError(
        "--checksums and --iso-signature need --keyring: the publisher's public key",
      );
    }
    if (await isIso(source, opts.offline === true)) return runIso(source, opts, vm, log);
    if (checks.length > 0) {
      throw new UsageError(
        "--sha256, --checksums and --iso-signature are for ISOs; a disk image's releases are checked by their signature (--trust)",
      );
    }
    return runImage(source, opts, vm, log);
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
  vm: Omit<VmOptions, "kernel" | "initrd" | "cmdline" | "drives" | "progress">,
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
      drives: [
        `file=nbd+unix:///cdrom?socket=${socket},format=raw,media=cdrom,readonly=on,if=ide`,
        ...drives,
      ],
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

function finish(label: string, result: VmResult, lines: string[]): void {
  if (result.failure !== null) {
    throw new Error(`${label}: ${result.failure}. Last console lines:\n${result.tail}`);
  }
  if (result.matched) lines.splice(1, 0, `  console    ${result.matched}`);
  console.log(lines.join("\n"));
}

async function runImage(
  source: string,
  opts: RunFlags,
  vm: Omit<VmOptions, "kernel" | "initrd" | "cmdline" | "drives" | "progress">,
  log: Logger,
): Promise<void> {
  const stack: DeviceStack = await openDeviceStack(source, {
    stores: opts.store,
    cache: opts.cache,
    cacheQuotaBytes: opts.cacheQuota ? parseBytes(opts.cacheQuota) : undefined,
    offline: opts.offline,
    policy: trustPolicy(opts, { recordState: true }),
    logger: log,
  });
  const key = createHash("sha256").update(stack.baseId).digest("hex").slice(0, 16);
  // What this machine read while booting, kept for --offline checks when the release has no
  // published profile.
  const runProfile = join(opts.cache, "runs", `${key}.profile`);
  let bootSet: ProfileEntry[] | null = null;
  if (stack.image) {
    try {
      bootSet = readProfile(runProfile);
    } catch {
      bootSet = null;
    }
  }
  if (opts.offline && stack.image && stack.cache) {
    const wanted = bootSet ? profileChunks(stack.image.index, bootSet) : stack.image.index.chunks;
    const cover = cacheCoverage(stack.cache, wanted);
    if (cover.missing > 0) {
      await stack.close();
      throw new Error(
        `${stack.label} cannot boot offline: ${cover.missing} of the ${cover.needed} chunks ${bootSet ? "its last boot read" : "of the image"} (${formatBytes(cover.bytesMissing)}) are not in ${opts.cache}; run it once with the network`,
      );
    }
  }
  await mkdir(join(opts.cache, "runs"), { recursive: true });
  const traced = opts.offline ? stack.device : new TraceDevice(stack.device, runProfile);
  const safe = stack.label.replace(/^.*\//, "").replace(/[^\w.@-]+/g, "_");
  const disk = opts.disk ?? join(opts.cache, "disks", `${safe}.cow`);
  await mkdir(join(disk, ".."), { recursive: true });
  if (opts.fresh) await rm(disk, { force: true });
  let cow: CowDevice;
  try {
    cow = await CowDevice.open(traced, disk, { baseId: stack.baseId });
  } catch (err) {
    await stack.close();
    if (!/was made for base/.test((err as Error).message)) throw err;
    throw new Error(
      `${(err as Error).message} (the disk file ${disk} belongs to another image or release: pass --fresh to start it over, or --disk for another file)`,
      { cause: err },
    );
  }
  const work = mkdtempSync(join(tmpdir(), "inetboot-run-"));
  const socket = join(work, "nbd.sock");
  const server = new NbdServer({
    exports: [{ name: "disk", description: stack.label, device: cow }],
    logger: log,
  });
  await server.listen({ path: socket });
  const cmdline = opts.kernel
    ? /(^|\s)root=/.test(opts.cmdline)
      ? opts.cmdline
      : `${opts.cmdline} root=/dev/vda rw`
    : undefined;
  console.error(
    `Starting ${stack.label} (${formatBytes(stack.device.size)}) in QEMU; disk file ${disk}${opts.offline ? " (offline)" : ""}`,
  );
  const fetched = (): number =>
    (stack.mirrors?.fetchedBytes ?? 0) + (stack.pack?.deliveredBytes ?? 0);
  const started = performance.now();
  let result: VmResult;
  try {
    result = await runVm({
      ...vm,
      kernel: opts.kernel,
      initrd: opts.initrd,
      cmdline,
      drives: [`file=nbd+unix:///disk?socket=${socket},format=raw,if=virtio,cache=writeback`],
      progress: () => {
        const c = stack.cache?.stats;
        const s = (performance.now() - started) / 1000;
        return `  fetched ${formatBytes(fetched())} (${rate(fetched(), s)}), ${c?.hits ?? 0} cache hits, ${c?.misses ?? 0} misses, disk file ${formatBytes(cow.writtenBlocks * COW_BLOCK_SIZE)} written`;
      },
    });
  } finally {
    await server.close();
    await cow.close();
    stack.cache?.saveSettings();
    rmSync(work, { recursive: true, force: true });
  }
  const c = stack.cache?.stats;
  finish(stack.label, result, [
    `Ran ${stack.label} for ${result.seconds.toFixed(1)} s${vm.until ? ` (to ${JSON.stringify(opts.until)})` : ""}`,
    `  network    ${formatBytes(fetched())} fetched${opts.offline ? " (offline)" : ""}`,
    `  cache      ${c?.hits ?? 0} hits, ${c?.misses ?? 0} misses (${opts.cache})`,
    `  disk file  ${disk}: ${formatBytes(await allocated(disk))} on disk for a ${formatBytes(stack.device.size)} image`,
  ]);
}

async function runIso(
  source: string,
  opts: RunFlags,
  vm: Omit<VmOptions, "kernel" | "initrd" | "cmdline" | "drives" | "progress">,
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
      cmdline: `{recipe} ${opts.cmdline}`,
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
  let result: VmResult;
  const started = performance.now();
  try {
    const kernel = await iso.extract(iso.recipe.kernel);
    const initrds = [];
    for (const p of iso.recipe.initrd) initrds.push((await iso.extract(p)).path);
    console.error(
      `Booting ${source} (${iso.recipe.family}: ${iso.recipe.description}) in QEMU${opts.offline ? " (offline)" : ""}`,
    );
    result = await runVm({
      ...vm,
      kernel: kernel.path,
      initrd: initrds,
      drives,
      // 10.0.2.2 is the host as QEMU's user-mode network shows it.
      cmdline: iso.cmdline(`http://10.0.2.2:${port}/iso`),
      progress: () =>
        `  ${cacheLine(iso.cacheStats, iso.device.size, (performance.now() - started) / 1000)}`,
    });
  } finally {
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
    await iso.close();
  }
  finish(source, result, [
    `Ran ${source} for ${result.seconds.toFixed(1)} s${vm.until ? ` (to ${JSON.stringify(opts.until)})` : ""}`,
    `  recipe     ${iso.recipe.family}: ${iso.recipe.kernel} ${iso.recipe.initrd.join(" ")}`,
    `  network    ${cacheLine(iso.cacheStats, iso.device.size)}${iso.cacheStats ? ` (${opts.cache})` : ""}`,
    ...(opts.disk
      ? [`  disk file  ${opts.disk}: ${formatBytes(await allocated(opts.disk))} on disk`]
      : []),
  ]);
}
