// One QEMU virtual machine for the CLI (`inetboot run`, `inetboot profile record`): its serial
// console watched for a marker (or shown on the terminal), a progress line meanwhile, and a
// clear reason when it stops early.
import { spawn } from "node:child_process";
import { copyFileSync, createWriteStream, existsSync, mkdtempSync } from "node:fs";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The guest architectures `run` knows: its QEMU, machine and serial console. */
export const VM_ARCHS = {
  x86_64: { qemu: "qemu-system-x86_64", pkg: "qemu-system-x86", console: "ttyS0" },
  arm64: { qemu: "qemu-system-aarch64", pkg: "qemu-system-arm", console: "ttyAMA0" },
} as const;
export type VmArch = keyof typeof VM_ARCHS;

/** arm64 UEFI firmware (Debian's qemu-efi-aarch64), for guests that boot without -kernel. */
const AAVMF = { code: "/usr/share/AAVMF/AAVMF_CODE.fd", vars: "/usr/share/AAVMF/AAVMF_VARS.fd" };

export interface VmOptions {
  /** The guest's architecture (default x86_64). */
  arch?: VmArch;
  accel: string;
  memoryMb: number;
  cpus?: number;
  kernel?: string;
  /** Several initrds are concatenated, 4-byte aligned (QEMU loads one for Linux; the kernel unpacks each). */
  initrd?: string[];
  cmdline?: string;
  /** QEMU -drive specifications. */
  drives?: string[];
  /** A CD-ROM's drive file (placed on IDE for x86_64, virtio-scsi for arm64). */
  cdrom?: string;
  /** QEMU -display (gtk, sdl, vnc=:1); none (default): the serial console only. */
  display?: string;
  /** QEMU -boot order ("d": the CD-ROM first). */
  boot?: string;
  /** User-mode networking (the host is 10.0.2.2 to the guest). */
  network?: boolean;
  /** Show the serial console on the terminal and pass the keyboard to it. */
  console?: boolean;
  /** Also write the serial console to this file. */
  consoleLog?: string;
  /** The run is over (successfully) when the console prints this; else when QEMU exits. */
  until?: RegExp;
  timeoutSeconds?: number;
  /** A line drawn on stderr every half second when the console is not shown. */
  progress?: () => string;
}

export interface VmResult {
  /** null: it got there (the marker, or the guest powered off); else why not. */
  failure: string | null;
  seconds: number;
  /** The console's last lines. */
  tail: string;
  /** The console line `until` matched. */
  matched: string | null;
}

export function qemuArgs(
  o: VmOptions,
  initrd: string | undefined,
  firmwareVars?: string,
): string[] {
  const arm = o.arch === "arm64";
  const args = [
    ...(arm ? ["-machine", "virt", "-cpu", o.accel === "kvm" ? "host" : "cortex-a57"] : []),
    "-accel",
    o.accel,
    "-m",
    String(o.memoryMb),
    "-smp",
    String(o.cpus ?? 1),
    // No display: -nographic also makes SeaBIOS mirror the text screen to the serial port,
    // so boot loaders (ISOLINUX, GRUB) show on the console; a display (gtk, sdl, vnc=:1) is
    // a window as usual, with the serial console still here.
    ...(o.display && o.display !== "none" ? ["-display", o.display] : ["-nographic"]),
    "-serial",
    "stdio",
    "-no-reboot",
    "-monitor",
    "none",
  ];
  if (o.network !== false)
    args.push("-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0");
  if (arm && !o.kernel) {
    // No -kernel: the guest boots through UEFI (an ISO's or a disk's own boot loader).
    args.push("-drive", `if=pflash,format=raw,readonly=on,file=${AAVMF.code}`);
    args.push("-drive", `if=pflash,format=raw,file=${firmwareVars}`);
  }
  if (o.cdrom) {
    const cd = `file=${o.cdrom},format=raw,media=cdrom,readonly=on`;
    if (arm) {
      args.push("-drive", `${cd},if=none,id=cd0`, "-device", "virtio-scsi-pci,id=scsi0");
      args.push("-device", "scsi-cd,drive=cd0,bus=scsi0.0");
    } else args.push("-drive", `${cd},if=ide`);
  }
  for (const d of o.drives ?? []) args.push("-drive", d);
  if (o.boot) args.push("-boot", o.boot);
  if (o.kernel) {
    args.push("-kernel", o.kernel);
    if (initrd) args.push("-initrd", initrd);
    if (o.cmdline) args.push("-append", o.cmdline);
  }
  return args;
}

export async function runVm(o: VmOptions): Promise<VmResult> {
  let work: string | null = null;
  const workDir = (): string => (work ??= mkdtempSync(join(tmpdir(), "inetboot-vm-")));
  let initrd = o.initrd?.[0];
  let vars: string | undefined;
  const arch = VM_ARCHS[o.arch ?? "x86_64"];
  if (o.arch === "arm64" && !o.kernel) {
    if (!existsSync(AAVMF.code)) {
      throw new Error(`${AAVMF.code} is missing: install qemu-efi-aarch64 (arm64 UEFI firmware)`);
    }
    vars = join(workDir(), "AAVMF_VARS.fd");
    copyFileSync(AAVMF.vars, vars);
  }
  if (o.initrd && o.initrd.length > 1) {
    initrd = join(workDir(), "initrd");
    // Each part starts on a 4-byte boundary, as iPXE and boot loaders place them: the kernel
    // takes a cpio header only there (the zeros between parts are skipped).
    const parts = o.initrd.map((p) => readFileSync(p));
    const padded = parts.flatMap((b) => [b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
    writeFileSync(initrd, Buffer.concat(padded));
  }
  const started = performance.now();
  // stdin stays an open pipe: QEMU's stdio console spins on a closed one.
  const qemu = spawn(arch.qemu, qemuArgs(o, initrd, vars), {
    stdio: ["pipe", "pipe", "pipe"],
  });
  const log = o.consoleLog ? createWriteStream(o.consoleLog) : null;
  const stdin = process.stdin;
  const raw = o.console && stdin.isTTY;
  const forward = (d: Buffer): void => {
    // Ctrl-] leaves, like telnet; everything else goes to the guest.
    if (d.includes(0x1d)) qemu.kill("SIGTERM");
    else qemu.stdin.write(d);
  };
  if (o.console) {
    if (raw) stdin.setRawMode(true);
    stdin.on("data", forward);
    stdin.resume();
  }
  let out = "";
  const progress = setInterval(() => {
    if (o.console || !o.progress || !process.stderr.isTTY) return;
    process.stderr.write(`\r${o.progress().slice(0, (process.stderr.columns || 120) - 1)}\x1b[K`);
  }, 500);
  const failure = await new Promise<string | null>((resolve) => {
    const limit = o.timeoutSeconds;
    const timer = limit
      ? setTimeout(
          () =>
            resolve(
              o.until
                ? `no ${o.until} on the console within ${limit} s`
                : `still running after ${limit} s`,
            ),
          limit * 1000,
        )
      : null;
    let ending = false;
    const done = (why: string | null): void => {
      if (timer) clearTimeout(timer);
      resolve(why);
    };
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.length > 1 << 20) out = out.slice(-(1 << 19));
      if (o.console) process.stdout.write(d);
      log?.write(d);
      if (!o.until || ending) return;
      const text = out.replace(/\r/g, "");
      const hit = o.until.exec(text);
      if (!hit) return;
      // The marker's line is finished first (it carries what the caller wants to see).
      ending = true;
      const from = hit.index;
      const lineEnded = (): boolean => out.replace(/\r/g, "").indexOf("\n", from) >= 0;
      if (lineEnded()) return done(null);
      const started = Date.now();
      const wait = setInterval(() => {
        if (lineEnded() || Date.now() - started > 1000) {
          clearInterval(wait);
          done(null);
        }
      }, 20);
    };
    qemu.stdout.on("data", onData);
    qemu.stderr.on("data", onData);
    qemu.once("error", (err) =>
      done(`cannot run ${arch.qemu} (${err.message}); install ${arch.pkg}`),
    );
    qemu.once("exit", (code, signal) => {
      if (ending) done(null);
      else if (o.until)
        done(`QEMU exited (${signal ?? `code ${code}`}) before ${o.until} appeared`);
      else
        done(
          code === 0 || signal === "SIGTERM"
            ? null
            : `QEMU exited with ${signal ?? `code ${code}`}`,
        );
    });
  });
  clearInterval(progress);
  if (process.stderr.isTTY && !o.console && o.progress) process.stderr.write("\r\x1b[K");
  if (o.console) {
    stdin.off("data", forward);
    if (raw) stdin.setRawMode(false);
    stdin.pause();
  }
  qemu.kill("SIGKILL");
  log?.end();
  if (work) rmSync(work, { recursive: true, force: true });
  const text = out.replace(/\r/g, "");
  const hit = o.until && failure === null ? o.until.exec(text) : null;
  return {
    failure,
    seconds: (performance.now() - started) / 1000,
    tail: text.split("\n").slice(-30).join("\n"),
    matched: hit
      ? text
          .slice(text.lastIndexOf("\n", hit.index) + 1)
          .split("\n")[0]
          .trim()
      : null,
  };
}
