// A store in a local directory: reads, and the atomic writes `pack` and `gc` need.
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, stat, link, unlink } from "node:fs/promises";
import { dirname, resolve, sep } from "node:path";
import { FetchError, NotFoundError } from "./errors.ts";
import type { StoreReader } from "./store-reader.ts";

export class LocalStoreReader implements StoreReader {
  readonly location: string;

  constructor(root: string) {
    this.location = resolve(root);
  }

  /** Resolves a store-relative path, refusing any that would leave the root. */
  resolvePath(path: string): string {
    const full = resolve(this.location, path);
    if (full !== this.location && !full.startsWith(this.location + sep)) {
      throw new NotFoundError(path, `Refusing path outside the store: ${path}`);
    }
    return full;
  }

  describe(path: string): string {
    return this.resolvePath(path);
  }

  async read(path: string): Promise<Buffer> {
    const full = this.resolvePath(path);
    try {
      return await readFile(full);
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) throw new NotFoundError(full);
      throw err;
    }
  }

  async *readRange(path: string, offset: number, length: number): AsyncIterable<Buffer> {
    const size = await this.size(path);
    if (size === null) throw new NotFoundError(this.resolvePath(path));
    if (offset + length > size) {
      throw new FetchError(
        `${this.resolvePath(path)} is ${size} bytes, shorter than ${offset + length}`,
      );
    }
    if (length === 0) return;
    yield* createReadStream(this.resolvePath(path), { start: offset, end: offset + length - 1 });
  }

  async size(path: string): Promise<number | null> {
    try {
      return (await stat(this.resolvePath(path))).size;
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return null;
      throw err;
    }
  }

  async close(): Promise<void> {}
}

export function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/** A unique temporary name beside `path`; `gc` removes stale ones (`*.tmp`). */
export function tempPathFor(path: string): string {
  return `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
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
