// Read access to a store's static files, local or over HTTP. Paths are relative to the root.
import { LocalStoreReader } from "./local-store.ts";
import { HttpStoreReader } from "./http-store.ts";
import type { HttpStoreOptions } from "./http-store.ts";

export interface ReadOptions {
  /**
   * The most bytes the file can legitimately be (see limits.ts); a larger one is refused with
   * BodyTooLargeError as soon as that is known, without reading the rest. Default
   * DEFAULT_MAX_READ_BYTES.
   */
  maxBytes?: number;
  /** What the file is, for the error message ("release", "chunk"). */
  what?: string;
}

export interface StoreReader {
  /** The root: a directory path or a URL ending in "/". */
  readonly location: string;
  /**
   * Reads a whole file; throws NotFoundError when it does not exist, BodyTooLargeError when it
   * is larger than `options.maxBytes`.
   */
  read(path: string, options?: ReadOptions): Promise<Buffer>;
  /** The file's size in bytes, or null when it does not exist. */
  size(path: string): Promise<number | null>;
  /**
   * Streams `length` bytes of `path` from `offset` (one HTTP Range request), as they arrive.
   * Throws NotFoundError when the file does not exist, FetchError when it is shorter.
   */
  readRange(path: string, offset: number, length: number): AsyncIterable<Buffer>;
  /** The full path or URL of `path`, for messages. */
  describe(path: string): string;
  close(): Promise<void>;
}

export function isUrl(text: string): boolean {
  return /^https?:\/\//i.test(text);
}

/** Opens `location` (a directory or an http(s) URL) as a store. */
export function openStoreReader(location: string, options: HttpStoreOptions = {}): StoreReader {
  return isUrl(location) ? new HttpStoreReader(location, options) : new LocalStoreReader(location);
}
