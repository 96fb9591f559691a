// A root or /boot filesystem's kernels and initrds, as a distribution leaves them: Debian's
// /boot/vmlinuz-VERSION and initrd.img-VERSION with /vmlinuz and /initrd.img links to the
// default, Fedora's initramfs-VERSION.img, a separate /boot partition (the files at its top),
// and a kernel command line in /etc/kernel/cmdline.
import { Ext4 } from "./ext4.ts";

export interface BootFiles {
  /** The folder they are in ("/boot", or "/" for a /boot partition). */
  dir: string;
  kernels: string[];
  initrds: string[];
  /** What the default links point at (full paths), when there are such links. */
  defaultKernel?: string;
  defaultInitrd?: string;
  cmdline?: string;
}

const KERNEL = /^(?:vmlinuz|vmlinux|Image)-(.+)$/;
const INITRD = /^(?:initrd\.img-(.+)|initramfs-(.+)\.img|initrd-(.+)\.img)$/;

/** The full path a link at `path` points to (relative targets resolved), or undefined. */
async function linkTarget(fs: Ext4, path: string): Promise<string | undefined> {
  const link = await fs.lookup(path, false);
  if (!link || Ext4.kind(link) !== "symlink") return undefined;
  const target = await fs.readlink(link);
  if (target.startsWith("/")) return target;
  const folder = path.slice(0, path.lastIndexOf("/") + 1);
  return `${folder}${target}`.replace(/\/\.\//g, "/");
}

/** The kernels and initrds of `fs`, or null when it has none. */
export async function findBootFiles(fs: Ext4): Promise<BootFiles | null> {
  for (const dir of ["/boot", "/"]) {
    const folder = await fs.lookup(dir);
    if (!folder || Ext4.kind(folder) !== "dir") continue;
    const names = [...(await fs.list(folder)).keys()].sort();
    const kernels = names.filter((n) => KERNEL.test(n));
    if (kernels.length === 0) continue;
    const at = (n: string): string => (dir === "/" ? `/${n}` : `${dir}/${n}`);
    const found: BootFiles = {
      dir,
      kernels: kernels.map(at),
      initrds: names.filter((n) => INITRD.test(n)).map(at),
    };
    for (const [key, names] of [
      ["defaultKernel", ["/vmlinuz", "/boot/vmlinuz"]],
      ["defaultInitrd", ["/initrd.img", "/boot/initrd.img"]],
    ] as const) {
      for (const n of names) {
        const target = await linkTarget(fs, n);
        if (target) {
          found[key] = target;
          break;
        }
      }
    }
    const cmdline = await fs.lookup("/etc/kernel/cmdline");
    if (cmdline && Ext4.kind(cmdline) === "file") {
      found.cmdline = (await fs.read(cmdline, 4096)).toString("utf8").trim();
    }
    return found;
  }
  return null;
}
