// QEMU (TCG) runs for boot tests: start, watch the serial console for a marker, kill.
import { spawn } from "node:child_process";
import {
  appendFileSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { StringDecoder } from "node:string_decoder";
import { join } from "node:path";

/**
 * Boots QEMU until `marker` appears on the serial console (or the timeout); returns the output.
 * The console goes to a file, never a pipe: a guest writing faster than this process reads
 * would find the UART busy and drop characters ("Command ine:") once the pipe is full.
 */
export async function bootUntil(
  args: string[],
  marker: RegExp,
  timeoutMs: number,
  options: { netns?: string; memoryMb?: number; binary?: string } = {},
): Promise<string> {
  const binary = options.binary ?? "qemu-system-x86_64";
  const cmd = options.netns ? "ip" : binary;
  const prefix = options.netns ? ["netns", "exec", options.netns, binary] : [];
  const dir = mkdtempSync(join(tmpdir(), "inetboot-console-"));
  const consoleFile = join(dir, "serial.log");
  writeFileSync(consoleFile, "");
  const qemu = spawn(cmd, [
    ...prefix,
    "-accel",
    "tcg",
    "-m",
    String(options.memoryMb ?? 512),
    "-nographic",
    "-no-reboot",
    "-display",
    "none",
    "-serial",
    `file:${consoleFile}`,
    "-monitor",
    "none",
    ...args,
  ]);
  let out = "";
  let errors = "";
  // INETBOOT_TEST_CONSOLE=FILE: every console's output as it comes (for watching a long boot).
  const watch = process.env.INETBOOT_TEST_CONSOLE;
  const fd = openSync(consoleFile, "r");
  const chunk = Buffer.alloc(1 << 16);
  const text = new StringDecoder("utf8");
  const drain = (): void => {
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) return;
      out += text.write(chunk.subarray(0, n));
      if (watch) appendFileSync(watch, chunk.subarray(0, n));
    }
  };
  qemu.stdout.on("data", (d: Buffer) => (errors += d.toString()));
  qemu.stderr.on("data", (d: Buffer) => (errors += d.toString()));
  const shown = (): string => `${errors}${out}`.slice(-3000);
  let poll: NodeJS.Timeout | undefined;
  let settled = false;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `no ${marker} on the serial console within ${timeoutMs / 1000} s:\n${shown()}`,
            ),
          ),
        timeoutMs,
      );
      const check = (): boolean => {
        if (settled) return true;
        drain();
        if (!marker.test(out)) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      poll = setInterval(check, 100);
      qemu.on("exit", () => {
        clearTimeout(timer);
        if (!check()) reject(new Error(`QEMU exited before ${marker}:\n${shown()}`));
      });
    });
  } finally {
    settled = true;
    clearInterval(poll);
    qemu.kill("SIGKILL");
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  return `${errors}${out}`.replace(/\r/g, "");
}

/** QEMU arguments for a NIC on `tap` with `mac` that network-boots (its iPXE ROM, or `romfile`). */
export function tapNic(
  tap: string,
  mac: string,
  options: { model?: string; romfile?: string } = {},
): string[] {
  const rom = options.romfile === undefined ? "" : `,romfile=${options.romfile}`;
  return [
    "-netdev",
    `tap,id=n0,ifname=${tap},script=no,downscript=no`,
    "-device",
    `${options.model ?? "virtio-net-pci"},netdev=n0,mac=${mac}${rom}`,
    "-boot",
    "n",
  ];
}

/** The UEFI firmware of a test machine: x86_64 OVMF or arm64 AAVMF, Secure Boot on or off. */
export interface UefiMachine {
  binary: string;
  args: string[];
  /** The firmware's files, to skip the test when they are missing. */
  files: string[];
}

/**
 * QEMU arguments for UEFI firmware with its variables copied into `dir`. With `secureBoot`,
 * Microsoft's keys are enrolled and Secure Boot is enforced (x86_64: the SMM-protected secboot
 * build, as real machines have it).
 */
export function uefiMachine(
  dir: string,
  arch: "x86_64" | "arm64",
  secureBoot: boolean,
): UefiMachine {
  const vars = join(dir, `vars-${arch}-${secureBoot ? "sb" : "plain"}.fd`);
  if (arch === "x86_64") {
    const code = `/usr/share/OVMF/OVMF_CODE_4M${secureBoot ? ".secboot" : ""}.fd`;
    const template = `/usr/share/OVMF/OVMF_VARS_4M${secureBoot ? ".ms" : ""}.fd`;
    if (existsSync(template)) copyFileSync(template, vars);
    return {
      binary: "qemu-system-x86_64",
      files: [code, template],
      args: [
        "-machine",
        secureBoot ? "q35,smm=on" : "q35",
        ...(secureBoot ? ["-global", "driver=cfi.pflash01,property=secure,value=on"] : []),
        "-drive",
        `if=pflash,format=raw,unit=0,readonly=on,file=${code}`,
        "-drive",
        `if=pflash,format=raw,unit=1,file=${vars}`,
      ],
    };
  }
  const code = "/usr/share/AAVMF/AAVMF_CODE.fd";
  const template = `/usr/share/AAVMF/AAVMF_VARS${secureBoot ? ".ms" : ""}.fd`;
  if (existsSync(template)) copyFileSync(template, vars);
  return {
    binary: "qemu-system-aarch64",
    files: [code, template],
    args: [
      "-machine",
      "virt",
      "-cpu",
      "cortex-a57",
      "-drive",
      `if=pflash,format=raw,readonly=on,file=${code}`,
      "-drive",
      `if=pflash,format=raw,file=${vars}`,
    ],
  };
}
