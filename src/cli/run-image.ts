// `inetboot run` with a disk image, VMSeed-style: the image reaches QEMU through a private NBD
// export (verified chunk cache below, the VM's own copy-on-write disk file above), so the local
// disk starts at a few MB and grows only with what the guest reads or writes; a re-run boots
// from the cache.
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cacheCoverage } from "../block/chunk-cache.ts";
import { COW_BLOCK_SIZE, CowDevice, OverlayMismatchError } from "../block/cow-device.ts";
import { openDeviceStack } from "../block/open-stack.ts";
import type { DeviceStack } from "../block/open-stack.ts";
import type { BlockDevice } from "../block/block-device.ts";
import { copyImageBoot, findImageBoot } from "../disk/image-boot.ts";
import { profileChunks, readProfile } from "../store/profile.ts";
import type { ProfileEntry } from "../store/profile.ts";
import { TraceDevice } from "../block/trace-device.ts";
import type { Logger } from "../lib/log.ts";
import { NbdServer } from "../nbd/server.ts";
import { formatBytes } from "../lib/format.ts";
import { parseBytes } from "./options.ts";
import { runVm } from "./qemu-vm.ts";
import type { VmResult } from "./qemu-vm.ts";
import { allocated, finish, rate } from "./run-common.ts";
import type { RunFlags, RunVmSettings } from "./run-common.ts";
import { trustPolicy } from "./trust-options.ts";

/**
 * The image's own kernel, initrds and command line (its root= as the image names it, else its
 * root partition on the VM's virtio disk), copied into `dir`; null when the image has none.
 */
async function imageKernel(
  device: BlockDevice,
  dir: string,
): Promise<{
  kernel: string;
  initrds: string[];
  cmdline: string;
  path: string;
  from: string;
} | null> {
  const facts = await findImageBoot(device).catch(() => null);
  const boot = facts?.boot;
  if (!facts || !boot) return null;
  const files = await copyImageBoot(device, { ...facts, boot }, dir);
  const root =
    boot.rootSpec ?? boot.nbdRoot.replace("/dev/nbd0", "/dev/vda").replace("/dev/vdap", "/dev/vda");
  return {
    ...files,
    cmdline: `${boot.cmdline} root=${root}`,
    path: boot.kernel.path,
    from: boot.from,
  };
}

/**
 * Whether the overlay was made for another base (another image or release), rather than not
 * being an overlay at all: OverlayMismatchError is raised for both and carries nothing else
 * that tells them apart.
 */
function isOtherBase(err: OverlayMismatchError): boolean {
  return /was made for base/.test(err.message);
}

export async function runImage(
  source: string,
  opts: RunFlags,
  vm: RunVmSettings,
  log: Logger,
): Promise<void> {
  const stack: DeviceStack = await openDeviceStack(source, {
    stores: opts.store,
    cache: opts.cache,
    cacheQuotaBytes: opts.cacheQuota ? parseBytes(opts.cacheQuota) : undefined,
    unpacked: opts.unpacked,
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
    if (!(err instanceof OverlayMismatchError) || !isOtherBase(err)) throw err;
    throw new Error(
      `${err.message} (the disk file ${disk} belongs to another image or release: pass --fresh to start it over, or --disk for another file)`,
      { cause: err },
    );
  }
  const work = mkdtempSync(join(tmpdir(), "inetboot-run-"));
  // No --kernel: the image's own kernel, read from the VM's disk (its updates included).
  const own = opts.kernel || opts.imageKernel === false ? null : await imageKernel(cow, work);
  if (own) {
    console.error(
      `Booting the image's own kernel ${own.path} (${own.from}); --no-image-kernel boots through the firmware instead`,
    );
  }
  const socket = join(work, "nbd.sock");
  const server = new NbdServer({
    exports: [{ name: "disk", description: stack.label, device: cow }],
    logger: log,
  });
  await server.listen({ path: socket });
  const cmdline = opts.kernel
    ? /(^|\s)root=/.test(opts.cmdline ?? "")
      ? opts.cmdline
      : `${opts.cmdline ?? ""} root=/dev/vda rw`
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
      kernel: opts.kernel ?? own?.kernel,
      initrd: own ? own.initrds : opts.initrd,
      cmdline: own ? `${own.cmdline} ${opts.cmdline ?? ""}`.trim() : cmdline,
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
