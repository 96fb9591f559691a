// Turning a path that came from the network into a file under a root, or refusing it.
import { isAbsolute, join, normalize, relative, sep } from "node:path";

export class UnsafePathError extends Error {}

/**
 * The path of `requested` inside `root`. Accepts "/a/b", "a/b" and DOS-style "a\\b" (PXE
 * clients send those); refuses NUL bytes and anything that would leave the root ("..").
 */
export function resolveUnder(root: string, requested: string): string {
  if (requested.includes("\0")) throw new UnsafePathError("path contains a NUL byte");
  const cleaned = requested.replace(/\\/g, "/").replace(/^\/+/, "");
  const parts = cleaned.split("/");
  if (parts.includes("..")) throw new UnsafePathError(`path "${requested}" goes above its root`);
  const full = join(root, normalize(cleaned));
  const rel = relative(root, full);
  if (rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw new UnsafePathError(`path "${requested}" goes above its root`);
  }
  return full;
}
