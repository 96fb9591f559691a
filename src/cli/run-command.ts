// `inetboot run`: a VM from a streamed image, VMSeed-style, or a live ISO file or URL booted
// through its recipe. This file reads the flags and picks the path: run-image.ts for a disk
// image, run-iso.ts for an ISO.
import { mkdir } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "commander";
import type { Command } from "commander";
import { createLogger } from "../lib/log.ts";
import { UsageError } from "../store/errors.ts";
import { collect, positiveInt } from "./options.ts";
import { VM_ARCHS } from "./qemu-vm.ts";
import type { RunFlags, RunVmSettings } from "./run-common.ts";
import { runImage } from "./run-image.ts";
import { isIso, runIso } from "./run-iso.ts";
import { addTrustOptions, VM_TRUST_HELP } from "./trust-options.ts";

function sha256Hex(value: string): string {
  if (!/^[0-9a-f]{64}$/i.test(value)) throw new InvalidArgumentError("expected 64 hex digits");
  return value.toLowerCase();
}

function defaultCache(): string {
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "inetboot");
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
    .option(
      "--no-unpacked",
      "keep only the compressed chunks in the cache, not also the image's bytes uncompressed (less disk, slower warm reads)",
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
    .option(
      "--no-image-kernel",
      "a disk image without --kernel boots through the firmware and its own boot loader, not the kernel inetboot finds in it",
    )
    .option(
      "--cmdline <text>",
      "kernel command line (added to an ISO recipe's; default console=ttyS0, ttyAMA0 on arm64)",
    )
    .option(
      "--arch <x86_64|arm64>",
      "the guest's architecture (arm64: qemu-system-aarch64 -M virt, AAVMF when no --kernel)",
      "x86_64",
    )
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
    .option(
      "--download",
      "boot a live ISO with its family's download recipe (the guest copies the ISO or squashfs into RAM) instead of attaching it over NBD",
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
    if (!Object.hasOwn(VM_ARCHS, opts.arch)) {
      throw new UsageError(
        `--arch ${opts.arch}: expected one of ${Object.keys(VM_ARCHS).join(", ")}`,
      );
    }
    opts.cmdline ??= `console=${VM_ARCHS[opts.arch].console}`;
    const vm: RunVmSettings = {
      arch: opts.arch,
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
