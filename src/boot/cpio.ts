// A cpio "newc" (SVR4, magic 070701) writer: the format of Linux initramfs archives. Used to
// build small initrds and to append overlays to existing ones (the kernel unpacks each
// concatenated archive in turn).

export type CpioEntry =
  | { type: "dir"; path: string; mode?: number }
  | { type: "file"; path: string; data: Buffer | string; mode?: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "chardev" | "blockdev"; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
    throw new RangeError(`cpio field ${n} out of range`);
  return n.toString(16).padStart(8, "0");
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function record(
  ino: number,
  name: string,
  mode: number,
  data: Buffer,
  nlink: number,
  rdev: [number, number] = [0, 0],
  mtime = 0,
): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`, "utf8");
  const header =
    "070701" +
    [ino, mode, 0, 0, nlink, mtime, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0]
      .map(hex8)
      .join("");
  const head = Buffer.concat([Buffer.from(header, "latin1"), nameBytes]);
  return [head, pad4(head.length), data, pad4(data.length)];
}

/**
 * Builds a newc archive. Paths are relative ("init", "bin/busybox"); missing parent folders are
 * added. Owner is root, times are 0 (reproducible output).
 */
export function writeCpio(entries: CpioEntry[], options: { mtime?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  const seen = new Set<string>();
  let ino = 1;
  const mtime = options.mtime ?? 0;
  const add = (
    name: string,
    mode: number,
    data: Buffer,
    nlink: number,
    rdev?: [number, number],
  ): void => {
    parts.push(...record(ino++, name, mode, data, nlink, rdev, mtime));
    seen.add(name);
  };
  for (const e of entries) {
    const path = e.path.replace(/^\/+|\/+$/g, "");
    if (!path || path.split("/").includes("..")) throw new Error(`bad cpio path "${e.path}"`);
    const dirs = path.split("/").slice(0, -1);
    for (let i = 1; i <= dirs.length; i++) {
      const d = dirs.slice(0, i).join("/");
      if (!seen.has(d)) add(d, S_IFDIR | 0o755, Buffer.alloc(0), 2);
    }
    switch (e.type) {
      case "dir":
        if (!seen.has(path)) add(path, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0), 2);
        break;
      case "file":
        add(path, S_IFREG | (e.mode ?? 0o644), Buffer.from(e.data), 1);
        break;
      case "symlink":
        add(path, S_IFLNK | 0o777, Buffer.from(e.target, "utf8"), 1);
        break;
      case "chardev":
      case "blockdev":
        add(
          path,
          (e.type === "chardev" ? S_IFCHR : S_IFBLK) | (e.mode ?? 0o600),
          Buffer.alloc(0),
          1,
          [e.major, e.minor],
        );
        break;
    }
  }
  parts.push(...record(0, "TRAILER!!!", 0, Buffer.alloc(0), 1));
  const out = Buffer.concat(parts);
  // Archives are conventionally padded to 512 bytes.
  return Buffer.concat([out, Buffer.alloc((512 - (out.length % 512)) % 512)]);
}
