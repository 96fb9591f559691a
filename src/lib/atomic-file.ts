// Files written so that no reader ever sees half of one: a temporary file beside the target,
// synced, then renamed (or linked, for files that must never be replaced).
import { randomBytes } from "node:crypto";
import { link, mkdir, open, rename, unlink } from "node:fs/promises";
import { dirname } from "node:path";

export function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

// Random once per thread (each worker loads its own copy), then a counter: a pack names a
// temporary file per chunk, and a random draw each time was 2% of its time.
const TEMP_RUN = randomBytes(4).toString("hex");
let tempCounter = 0;

/** A unique temporary name beside `path`; `gc` removes stale ones (`*.tmp`). */
export function tempPathFor(path: string): string {
  return `${path}.${process.pid}.${TEMP_RUN}${(tempCounter++).toString(36)}.tmp`;
}

async function writeTemp(
  path: string,
  data: Uint8Array | string,
  durable: boolean,
): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  const fh = await open(tmp, "wx", 0o644);
  try {
    await fh.writeFile(data);
    if (durable) await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

/**
 * Writes `data` to `path` so that no reader ever sees a partial file: a temporary file in the
 * same directory, synced when `durable`, then renamed over the final name.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  options: { durable?: boolean } = {},
): Promise<void> {
  const tmp = await writeTemp(path, data, options.durable ?? true);
  await rename(tmp, path);
}

/**
 * Like writeFileAtomic, but fails with EEXIST instead of replacing an existing file
 * (link(2) is atomic and exclusive), which makes immutable files truly immutable.
 */
export async function createFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = await writeTemp(path, data, true);
  try {
    await link(tmp, path);
  } finally {
    await unlink(tmp);
  }
}
