// `inetboot profile record`: boot an image once in QEMU through the access tracer and write the
// order in which the boot first read each region.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { openDeviceStack } from "../block/open-stack.ts";
import { TraceDevice } from "../block/trace-device.ts";
import { createLogger } from "../lib/log.ts";
import { NbdServer } from "../nbd/server.ts";
import { nbdRootCmdline } from "../boot/nbd-overlay.ts";
import { formatBytes } from "../lib/format.ts";
import { runVm } from "./qemu-vm.ts";
import { collect, positiveInt } from "./options.ts";
import { addTrustOptions, trustPolicy, VM_TRUST_HELP } from "./trust-options.ts";
import type { TrustFlags } from "./trust-options.ts";

interface RecordFlags extends TrustFlags {
  store: string[];
  cache?: string;
  out: string;
  kernel: string;
  initrd: string[];
  cmdline: string;
  until: string;
  timeout: number;
  memory: number;
  accel: string;
  console?: boolean;
}

export function registerProfileCommands(program: Command): void {
  const profile = program
    .command("profile")
    .description("boot profiles for prefetch and boot packs");
  const record = profile
    .command("record")
    .description(
      "boot an image once in QEMU through the access tracer and write its boot profile (the order in which the boot first read each region)",
    )
    .argument("<source>", "NAME, NAME@REVISION, a release, or a raw image file or URL")
    .option("--store <dir|url>", "store to read from; repeat for mirrors", collect, [])
    .option("--cache <dir>", "chunk cache (the recording boot then also warms it)")
    .requiredOption("--out <file>", "where to write the profile")
    .requiredOption("--kernel <file>", "kernel to boot (its initrd must mount an NBD root)")
    .option("--initrd <file>", "initrd (repeatable)", collect, [])
    .option(
      "--cmdline <text>",
      "kernel command line (root= and nbdroot= are added)",
      "console=ttyS0",
    )
    .option("--until <regex>", "the boot is over when the serial console prints this", "login: *$")
    .option("--timeout <seconds>", "give up after this long", positiveInt, 900)
    .option("--memory <MB>", "guest memory", positiveInt, 1024)
    .option(
      "--accel <kvm|tcg>",
      "QEMU accelerator (tcg works everywhere; kvm is faster where /dev/kvm works)",
      "tcg",
    )
    .option("--console", "show the guest's serial console");
  addTrustOptions(record, VM_TRUST_HELP).action(async (source: string, opts: RecordFlags) => {
    const until = new RegExp(opts.until, "m");
    const log = createLogger("profile");
    const work = mkdtempSync(join(tmpdir(), "inetboot-profile-"));
    // Guest writes go to a throwaway overlay; the tracer above it sees every read.
    const stack = await openDeviceStack(source, {
      stores: opts.store,
      cache: opts.cache,
      cow: join(work, "scratch.cow"),
      policy: trustPolicy(opts, { recordState: false }),
      logger: log,
    });
    const trace = new TraceDevice(stack.device, opts.out);
    const server = new NbdServer({
      exports: [{ name: "root", description: stack.label, device: trace }],
      logger: log,
    });
    const address = await server.listen({ host: "127.0.0.1", port: 0 });
    const port = "port" in address ? address.port : 0;
    console.error(`Recording the boot of ${stack.label} (${formatBytes(trace.size)}) in QEMU…`);
    const vm = await runVm({
      accel: opts.accel,
      memoryMb: opts.memory,
      kernel: opts.kernel,
      initrd: opts.initrd,
      // 10.0.2.2 is the host as QEMU's user-mode network shows it.
      cmdline: `${opts.cmdline} ${nbdRootCmdline("10.0.2.2", port, "root")}`.trim(),
      console: opts.console,
      until,
      timeoutSeconds: opts.timeout,
      progress: () => `  ${trace.entries} regions, ${formatBytes(trace.coveredBytes)} read`,
    });
    const { failure, seconds } = vm;
    await server.close();
    await trace.close();
    rmSync(work, { recursive: true, force: true });
    if (failure !== null) {
      throw new Error(
        `${failure}. The profile in ${opts.out} is incomplete. Last console lines:\n${vm.tail}\n(check --kernel/--initrd/--cmdline; the initrd needs nbd-client's initramfs support)`,
      );
    }
    console.log(
      [
        `Recorded the boot of ${stack.label} to ${opts.out}`,
        `  time     ${seconds.toFixed(1)} s to ${JSON.stringify(opts.until)}`,
        `  profile  ${trace.entries} regions, ${formatBytes(trace.coveredBytes)} read of ${formatBytes(trace.size)}`,
        `Publish it with: inetboot optimize NAME --profile ${opts.out} --store DIR --key KEY`,
      ].join("\n"),
    );
  });
}
