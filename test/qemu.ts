// QEMU (TCG) runs for boot tests: start, watch the serial console for a marker, kill.
import { spawn } from "node:child_process";

/** Boots QEMU until `marker` appears on the serial console (or the timeout); returns the output. */
export async function bootUntil(
  args: string[],
  marker: RegExp,
  timeoutMs: number,
  options: { netns?: string; memoryMb?: number } = {},
): Promise<string> {
  const cmd = options.netns ? "ip" : "qemu-system-x86_64";
  const prefix = options.netns ? ["netns", "exec", options.netns, "qemu-system-x86_64"] : [];
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
  qemu.stdout.on("data", (d: Buffer) => (out += d.toString()));
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
