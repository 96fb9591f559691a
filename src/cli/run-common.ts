// What both paths of `inetboot run` (a disk image, a live ISO) share: the flags, the VM settings
// they start from, and the summary printed when the VM stops.
import { stat } from "node:fs/promises";
import type { VmArch, VmOptions, VmResult } from "./qemu-vm.ts";
import type { TrustFlags } from "./trust-options.ts";

export interface RunFlags extends TrustFlags {
  store: string[];
  cache: string;
  cacheQuota?: string;
  /** false with --no-unpacked: only compressed chunks in the cache. */
  unpacked: boolean;
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
  /** false (--no-image-kernel): a disk image without --kernel boots through the firmware. */
  imageKernel?: boolean;
  /** Set from --arch when not given. */
  cmdline?: string;
  arch: VmArch;
  offline?: boolean;
  console?: boolean;
  cdrom?: boolean;
  download?: boolean;
  display: string;
  until?: string;
  timeout?: number;
}

/** The VM settings from the flags; each path adds its kernel, drives and progress line. */
export type RunVmSettings = Omit<
  VmOptions,
  "kernel" | "initrd" | "cmdline" | "drives" | "progress"
>;

/** The disk file's bytes on disk (it is sparse: only what the guest read or wrote). */
export async function allocated(path: string): Promise<number> {
  const st = await stat(path).catch(() => null);
  return st ? st.blocks * 512 : 0;
}

export function rate(bytes: number, seconds: number): string {
  return seconds > 0 ? `${(bytes / 1e6 / seconds).toFixed(1)} MB/s` : "";
}

/** Prints the summary `lines` (with the console line `until` matched), or throws the failure. */
export function finish(label: string, result: VmResult, lines: string[]): void {
  if (result.failure !== null) {
    throw new Error(`${label}: ${result.failure}. Last console lines:\n${result.tail}`);
  }
  if (result.matched) lines.splice(1, 0, `  console    ${result.matched}`);
  console.log(lines.join("\n"));
}
