// A store in a local directory: read, written (every file through lib/atomic-file.ts, so no
// reader ever sees half of one) and pruned.
import { createReadStream } from "node:fs";
import { open, readdir, rm, stat } from "node:fs/promises";
import { resolve, sep } from "node:path";
import { createFileAtomic, isErrno, writeFileAtomic } from "../lib/atomic-file.ts";
import { BodyTooLargeError, FetchError, NotFoundError } from "./errors.ts";
import { DEFAULT_MAX_READ_BYTES } from "./limits.ts";
import type { ReadOptions, StoreFileInfo, StorePruner, StoreReader, StoreWriter } from "./store.ts";

export class LocalStore implements StoreReader, StoreWriter, StorePruner {
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

  async read(path: string, options: ReadOptions = {}): Promise<Buffer> {
    const full = this.resolvePath(path);
    const limit = options.maxBytes ?? DEFAULT_MAX_READ_BYTES;
    let fh;
    try {
      fh = await open(full, "r");
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) throw new NotFoundError(full);
      throw err;
    }
    try {
      // Sized first: a file over the limit (or a device, a FIFO) is refused before a byte is read.
      const st = await fh.stat();
      if (!st.isFile()) throw new FetchError(`${full} is not a regular file`);
      if (st.size > limit) throw new BodyTooLargeError(full, limit, options.what);
      const buf = Buffer.allocUnsafe(st.size);
      let done = 0;
      while (done < st.size) {
        const { bytesRead } = await fh.read(buf, done, st.size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      // (Store files are replaced by rename, never grown in place: the stat'ed size is the file.)
      return buf.subarray(0, done);
    } finally {
      await fh.close();
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

  async create(path: string, data: Uint8Array | string): Promise<boolean> {
    try {
      await createFileAtomic(this.resolvePath(path), data);
      return true;
    } catch (err) {
      if (isErrno(err, "EEXIST")) return false;
      throw err;
    }
  }

  async replace(path: string, data: Uint8Array | string): Promise<void> {
    await writeFileAtomic(this.resolvePath(path), data);
  }

  async list(folder: string): Promise<string[]> {
    try {
      return await readdir(this.resolvePath(folder));
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return [];
      throw err;
    }
  }

  async stat(path: string): Promise<StoreFileInfo | null> {
    try {
      const st = await stat(this.resolvePath(path));
      return { size: st.size, modifiedMs: st.mtimeMs };
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return null;
      throw err;
    }
  }

  async remove(path: string): Promise<void> {
    await rm(this.resolvePath(path), { force: true });
  }

  async close(): Promise<void> {}
}
