// What a store can do, split the way desync splits it: every store can be read; some can be
// written (pack, optimize, the catalog); some can be pruned (gc). Paths are relative to the
// store's root and use "/" (see layout.ts for what lives where). A local folder does all three;
// an HTTP store only reads; an S3 or WebDAV store would implement the writer and pruner too.
import { UsageError } from "./errors.ts";

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

export interface StoreWriter {
  readonly location: string;
  /**
   * Creates an immutable file (a chunk, an index, a release): no reader ever sees part of it,
   * and an existing file is never replaced. Resolves true when written, false when `path`
   * already existed (content-addressed files: the same bytes are there; a release: the revision
   * is taken).
   */
  create(path: string, data: Uint8Array | string): Promise<boolean>;
  /** Replaces a small mutable file (`latest`, the catalog, a signature) whole and at once. */
  replace(path: string, data: Uint8Array | string): Promise<void>;
  /**
   * The names in a folder, unsorted; empty when the folder does not exist or is not a folder.
   * (A writable store can list itself: its catalog is rebuilt from a listing.)
   */
  list(folder: string): Promise<string[]>;
}

export interface StoreFileInfo {
  size: number;
  /** Last written or reused (a pack refreshes the chunks it reuses), ms since the epoch. */
  modifiedMs: number;
}

export interface StorePruner {
  readonly location: string;
  /** Size and age of a file, or null when it does not exist. */
  stat(path: string): Promise<StoreFileInfo | null>;
  /** Removes a file; one already gone is not an error. */
  remove(path: string): Promise<void>;
}

/** A store that can be read, written and pruned: what pack, optimize and gc work on. */
export type WritableStore = StoreReader & StoreWriter & StorePruner;

export function isStoreWriter(store: StoreReader): store is StoreReader & StoreWriter {
  const s = store as Partial<StoreWriter>;
  return (
    typeof s.create === "function" &&
    typeof s.replace === "function" &&
    typeof s.list === "function"
  );
}

export function isStorePruner(store: StoreReader): store is StoreReader & StorePruner {
  const s = store as Partial<StorePruner>;
  return typeof s.stat === "function" && typeof s.remove === "function";
}

/**
 * `store` as a writable store, or a UsageError saying that `purpose` ("pack", "gc") needs one.
 */
export function requireWritable(store: StoreReader, purpose: string): WritableStore {
  if (isStoreWriter(store) && isStorePruner(store)) return store;
  throw new UsageError(
    `Cannot ${purpose} ${store.location}: this store can only be read; expected a local store directory`,
  );
}
