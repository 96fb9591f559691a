// Disk images in the formats people have (qcow2, VMDK, VHDX, VHD, VDI, …) made raw for `pack`
// with qemu-img, which reads them all (backing files, compressed clusters, snapshots' active
// layer) — rather than a reader of our own for each. The raw copy is sparse (holes stay holes),
// kept beside the store (the chunks go there anyway) and removed when packing ends.
import { execFile, spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { formatBytes } from "../lib/format.ts";
import { createProgressBar } from "./progress.ts";

const execFileAsync = promisify(execFile);

export interface ImageFormat {
  format: string;
  virtualSize: number;
  /** Bytes the file takes on disk. */
  actualSize?: number;
}

/** What qemu-img says `path` is, or null when qemu-img is not installed. */
export async function imageFormat(path: string): Promise<ImageFormat | null> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync("qemu-img", ["info", "--output=json", path], {
      maxBuffer: 4 * 1024 * 1024,
    }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`qemu-img cannot read ${path}: ${stderr || (err as Error).message}`, {
      cause: err,
    });
  }
  const info = JSON.parse(stdout) as {
    format: string;
    "virtual-size": number;
    "actual-size"?: number;
  };
  return {
    format: info.format,
    virtualSize: info["virtual-size"],
    actualSize: info["actual-size"],
  };
}

/** The first bytes of formats that are not raw, to say what to install without qemu-img. */
export function looksLikeImageFormat(head: Buffer): string | null {
  if (head.subarray(0, 4).equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]))) return "qcow2";
  if (head.toString("latin1", 0, 4) === "KDMV") return "vmdk";
  if (head.toString("latin1", 0, 8) === "vhdxfile") return "vhdx";
  return null;
}

/**
 * A raw, sparse copy of `path` (any format qemu-img reads) in `dir`, with a progress bar; the
 * caller removes it (`remove`).
 */
export async function convertToRaw(
  path: string,
  format: ImageFormat,
  dir: string,
  progress: boolean,
): Promise<{ raw: string; remove: () => Promise<void> }> {
  const raw = join(dir, `.inetboot-convert-${process.pid}.raw`);
  const remove = (): Promise<void> => rm(raw, { force: true });
  const bar = createProgressBar({
    enabled: progress,
    label: `${format.format} → raw`,
  });
  const total = format.virtualSize;
  const child = spawn("qemu-img", ["convert", "-p", "-f", format.format, "-O", "raw", path, raw], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    const pct = /\((\d+(?:\.\d+)?)\/100%\)[^(]*$/.exec(d.toString())?.[1];
    if (pct) bar.update(Math.round((Number(pct) / 100) * total), total, formatBytes(total));
  });
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const code = await new Promise<number | null>((resolve) => {
    child.once("error", () => resolve(-1));
    child.once("exit", (c) => resolve(c));
  });
  bar.done();
  if (code !== 0) {
    await remove();
    throw new Error(`qemu-img could not convert ${path} (${format.format}): ${stderr.trim()}`);
  }
  return { raw, remove };
}
