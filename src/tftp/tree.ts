// What the TFTP server serves: a read-only virtual tree of named files (iPXE first stages,
// generated files) over an optional root folder. Files are read in large slices, so a transfer
// costs one read per 256 KiB, not one per block.
import { constants } from "node:fs";
import { open, readlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { resolveRealUnder, UnsafePathError } from "../lib/safe-path.ts";
import { isErrno } from "../lib/atomic-file.ts";
import { ErrorCode } from "./protocol.ts";

export class TftpError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

export interface TftpSource {
  readonly size: number;
  /** Bytes [offset, offset+length) (shorter only at the end of the file). */
  read(offset: number, length: number): Promise<Buffer>;
  /** The same bytes when they are already in memory, else null (the transfer's fast path). */
  peek(offset: number, length: number): Buffer | null;
  /**
   * Lets the source read its next slice into the buffer its earlier views point into when
   * `idle()` says none of them is held any more (a send still queued holds one).
   */
  reuseWhen?(idle: () => boolean): void;
  close(): Promise<void>;
}

/** Who asks for a file: the client's address (as seen on the wire, never its word). */
export interface TftpClient {
  address: string;
}

export interface TftpTree {
  /** Opens a file for reading, or throws TftpError (not found, access violation). */
  open(path: string, client?: TftpClient): Promise<TftpSource>;
}

const SLICE = 256 * 1024;

class FileSource implements TftpSource {
  readonly size: number;
  readonly #fh: FileHandle;
  #slice: Buffer = Buffer.alloc(0);
  #sliceAt = -1;
  /** The slice's whole buffer, refilled in place when `#idle` allows. */
  #buffer: Buffer | null = null;
  #idle: (() => boolean) | null = null;
  #filling = false;

  constructor(fh: FileHandle, size: number) {
    this.#fh = fh;
    this.size = size;
  }

  peek(offset: number, length: number): Buffer | null {
    const end = Math.min(offset + length, this.size);
    if (offset >= end) return Buffer.alloc(0);
    if (this.#sliceAt < 0 || offset < this.#sliceAt || end > this.#sliceAt + this.#slice.length) {
      return null;
    }
    return this.#slice.subarray(offset - this.#sliceAt, end - this.#sliceAt);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const end = Math.min(offset + length, this.size);
    if (offset >= end) return Buffer.alloc(0);
    if (this.#sliceAt < 0 || offset < this.#sliceAt || end > this.#sliceAt + this.#slice.length) {
      const n = Math.min(Math.max(SLICE, end - offset), this.size - offset);
      // A new 256 KiB buffer per slice was 64 MB of short-lived external memory per 64 MB
      // sent, and V8 answers that with full collections: a third of lock-step throughput.
      const reuse =
        !this.#filling &&
        this.#buffer !== null &&
        this.#buffer.length >= n &&
        this.#idle?.() === true;
      if (!reuse) this.#buffer = Buffer.allocUnsafe(n);
      const buf = this.#buffer!.subarray(0, n);
      this.#sliceAt = -1; // nothing to peek while the read fills the buffer
      this.#filling = true;
      try {
        const { bytesRead } = await this.#fh.read(buf, 0, n, offset);
        this.#slice = buf.subarray(0, bytesRead);
        this.#sliceAt = offset;
      } finally {
        this.#filling = false;
      }
    }
    return this.#slice.subarray(offset - this.#sliceAt, end - this.#sliceAt);
  }

  reuseWhen(idle: () => boolean): void {
    this.#idle = idle;
  }

  close(): Promise<void> {
    return this.#fh.close();
  }
}

export class BufferSource implements TftpSource {
  readonly #data: Buffer;
  constructor(data: Buffer) {
    this.#data = data;
  }
  get size(): number {
    return this.#data.length;
  }
  peek(offset: number, length: number): Buffer {
    return this.#data.subarray(offset, offset + length);
  }
  read(offset: number, length: number): Promise<Buffer> {
    return Promise.resolve(this.peek(offset, length));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Errors of open/realpath that mean "no such file" to a client (never an internal error). */
const NOT_FOUND_ERRNOS = ["ENOENT", "ENOTDIR", "ELOOP", "ENAMETOOLONG", "EISDIR", "EINVAL"];

function openError(err: unknown, shownAs: string): unknown {
  if (NOT_FOUND_ERRNOS.some((code) => isErrno(err, code))) {
    return new TftpError(ErrorCode.FILE_NOT_FOUND, `File not found: ${shownAs}`);
  }
  if (isErrno(err, "EACCES") || isErrno(err, "EPERM")) {
    return new TftpError(ErrorCode.ACCESS_VIOLATION, "Access denied");
  }
  return err;
}

/**
 * Opens a host file. With `noFollow` (a path already resolved by resolveRealUnder) the last
 * component must not be a symlink, and on Linux the opened file's path must still be `path`:
 * a folder swapped for a symlink between the check and the open is caught.
 */
export async function openFileSource(
  path: string,
  shownAs: string,
  options: { noFollow?: boolean } = {},
): Promise<TftpSource> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | (options.noFollow ? constants.O_NOFOLLOW : 0));
  } catch (err) {
    throw openError(err, shownAs);
  }
  const st = await fh.stat();
  let moved = false;
  if (options.noFollow) {
    moved = await readlink(`/proc/self/fd/${fh.fd}`).then(
      (opened) => opened !== path,
      () => false, // no /proc: the realpath check stands alone
    );
  }
  if (!st.isFile() || moved) {
    await fh.close();
    throw new TftpError(ErrorCode.FILE_NOT_FOUND, `File not found: ${shownAs}`);
  }
  return new FileSource(fh, st.size);
}

export type VirtualFile = string | (() => Buffer | Promise<Buffer>);

/** Named files (a host path or a generator) first, then the root folder if any. */
export class VirtualTree implements TftpTree {
  readonly #files = new Map<string, VirtualFile>();
  readonly #root: string | null;

  constructor(root: string | null, files: Record<string, VirtualFile> = {}) {
    this.#root = root;
    for (const [name, file] of Object.entries(files)) this.#files.set(normalizeName(name), file);
  }

  names(): string[] {
    return [...this.#files.keys()];
  }

  async open(requested: string): Promise<TftpSource> {
    const name = normalizeName(requested);
    const file = this.#files.get(name);
    if (typeof file === "string") return openFileSource(file, name);
    if (file) return new BufferSource(await file());
    if (!this.#root) throw new TftpError(ErrorCode.FILE_NOT_FOUND, `File not found: ${name}`);
    let path: string;
    try {
      path = await resolveRealUnder(this.#root, requested);
    } catch (err) {
      // ".." is refused as such (it reveals nothing); a symlink out of the root, a folder or a
      // device is just "not found", so a client learns nothing about what lies outside.
      if (err instanceof UnsafePathError && err.code === "ESCAPES_ROOT")
        throw new TftpError(ErrorCode.ACCESS_VIOLATION, err.message);
      if (err instanceof UnsafePathError)
        throw new TftpError(ErrorCode.FILE_NOT_FOUND, `File not found: ${name}`);
      throw openError(err, name);
    }
    return openFileSource(path, name, { noFollow: true });
  }
}

/** A requested name as the tree keys it: `\` as `/`, no leading `/`. */
export function normalizeName(name: string): string {
  return name.replace(/\\/g, "/").replace(/^\/+/, "");
}
