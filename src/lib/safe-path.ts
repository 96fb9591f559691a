// Turning a path that came from the network into a file under a root, or refusing it.
import { realpath, stat } from "node:fs/promises";
import { isAbsolute, join, normalize, relative, sep } from "node:path";

export class UnsafePathError extends Error {
  /** "ESCAPES_ROOT": ".." or a NUL byte in the request; "OUTSIDE_ROOT": a symlink leads out. */
  readonly code: "ESCAPES_ROOT" | "OUTSIDE_ROOT" | "NOT_A_FILE";
  constructor(message: string, code: UnsafePathError["code"] = "ESCAPES_ROOT") {
    super(message);
    this.code = code;
  }
}

function isUnder(root: string, full: string): boolean {
  const rel = relative(root, full);
  return !(rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel));
}

/**
 * The path of `requested` inside `root`. Accepts "/a/b", "a/b" and DOS-style "a\\b" (PXE
 * clients send those); refuses NUL bytes and anything that would leave the root (".."). Purely
 * lexical: symlinks are not looked at (see resolveRealUnder).
 */
export function resolveUnder(root: string, requested: string): string {
  if (requested.includes("\0")) throw new UnsafePathError("path contains a NUL byte");
  const cleaned = requested.replace(/\\/g, "/").replace(/^\/+/, "");
  const parts = cleaned.split("/");
  if (parts.includes("..")) throw new UnsafePathError(`path "${requested}" goes above its root`);
  const full = join(root, normalize(cleaned));
  if (!isUnder(root, full)) throw new UnsafePathError(`path "${requested}" goes above its root`);
  return full;
}

/**
 * Like resolveUnder, then follows symlinks: the real path of a regular file inside the real
 * path of `root`. A symlink (of the file or of a folder on the way) that leads out of the root
 * throws UnsafePathError "OUTSIDE_ROOT"; a folder, device or FIFO throws "NOT_A_FILE"; a
 * missing file rejects with the fs error (ENOENT, ENOTDIR, ELOOP). Two realpath calls and one
 * stat; nothing is opened. The caller opens the returned path with O_NOFOLLOW.
 */
export async function resolveRealUnder(root: string, requested: string): Promise<string> {
  const full = resolveUnder(root, requested);
  const [realRoot, real] = await Promise.all([realpath(root), realpath(full)]);
  if (!isUnder(realRoot, real)) {
    throw new UnsafePathError(`path "${requested}" leads outside its root`, "OUTSIDE_ROOT");
  }
  if (!(await stat(real)).isFile()) {
    throw new UnsafePathError(`path "${requested}" is not a regular file`, "NOT_A_FILE");
  }
  return real;
}
