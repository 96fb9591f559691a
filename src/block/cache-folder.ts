// The folder of one block cache (an ISO's blocks, an image's unpacked copy) inside a cache
// folder: named by a hash of what it holds, with that identity written in it. A folder whose
// identity file says otherwise (another block size, a format change) is emptied and claimed.
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isErrno } from "../lib/atomic-file.ts";

/** The folder for `key` under `root`. */
export function cacheFolder(root: string, key: string): string {
  return join(root, createHash("sha256").update(key).digest("hex").slice(0, 32));
}

/**
 * Makes `dir` hold `identity` (the exact text of its identity file): kept as it is when it
 * does already (its last use recorded, for the quota's least-recently-used order), else
 * emptied and claimed.
 */
export async function claimCacheFolder(dir: string, identity: string): Promise<void> {
  const idPath = join(dir, "identity");
  const stored = await readFile(idPath, "utf8").catch((err: unknown) => {
    if (isErrno(err, "ENOENT")) return null;
    throw err;
  });
  if (stored === identity) {
    const now = new Date();
    await utimes(idPath, now, now).catch(() => undefined);
    return;
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await writeFile(idPath, identity);
}
