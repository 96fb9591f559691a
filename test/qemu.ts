// QEMU (TCG) runs for boot tests: start, watch the serial console for a marker, kill.
import { spawn } from "node:child_process";
import { appendFileSync, copyFileSync, existsSync } from "node:fs";
import { join } from "node:path";

/** Boots QEMU until `marker` appears on the serial console (or the timeout); returns the output. */
export async function bootUntil(
  args: string[],
  marker: RegExp,
  timeoutMs: number,
  options: { netns?: string; memoryMb?: number; binary?: string } = {},
): Promise<string> {
  const binary = options.binary ?? "qemu-system-x86_64";
  const cmd = options.netns ? "ip" : binary;
  const prefix = options.netns ? ["netns", "exec", options.netns, binary] : [];
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
    "stdio",
    "-monitor",
    "none",
    ...args,
  ]);
  let out = "";
  // INETBOOT_TEST_CONSOLE=FILE: every console's output as it comes (for watching a long boot).
  const watch = process.env.INETBOOT_TEST_CONSOLE;
  qemu.stdout.on("data", (d: Buffer) => {
    out += d.toString();
    if (watch) appendFileSync(watch, d);
  });
  qemu.stderr.on("data", (d: Buffer) => (out += d.toString()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `no ${marker} on the serial console within ${timeoutMs / 1000} s:\n${out.slice(-3000)}`,
            ),
          ),
        timeoutMs,
      );
      const check = (): void => {
        if (marker.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      };
      qemu.stdout.on("data", check);
      qemu.on("exit", () => {
        check();
        clearTimeout(timer);
        if (!marker.test(out))
          reject(new Error(`QEMU exited before ${marker}:\n${out.slice(-3000)}`));
      });
    });
  } finally {
    qemu.kill("SIGKILL");
  }
  return out.replace(/\r/g, "");
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
