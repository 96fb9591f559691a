// Error classes for conditions callers catch, each with a stable `code`.

/** A file the store should have is not there (HTTP 404, ENOENT). */
export class NotFoundError extends Error {
  readonly code = "ERR_NOT_FOUND";
  readonly where: string;
  constructor(where: string, message = `Not found: ${where}`) {
    super(message);
    this.where = where;
  }
}

/** Fetching from a store failed for a reason other than absence (network, HTTP status). */
export class FetchError extends Error {
  readonly code = "ERR_FETCH";
}

/** A chunk referenced by an index is absent from the store. */
export class ChunkMissingError extends Error {
  readonly code = "ERR_CHUNK_MISSING";
  readonly chunkId: string;
  constructor(chunkId: string, where: string) {
    super(`Chunk ${chunkId} is missing: ${where} does not exist`);
    this.chunkId = chunkId;
  }
}

/** A chunk's bytes do not decompress, or do not hash to its name. Never served as data. */
export class ChunkCorruptError extends Error {
  readonly code = "ERR_CHUNK_CORRUPT";
  readonly chunkId: string;
  constructor(chunkId: string, where: string, what: string) {
    super(`Chunk ${chunkId} is corrupt (${what}): ${where}`);
    this.chunkId = chunkId;
  }
}

/** A release is malformed, unsigned, wrongly signed, or a downgrade. */
export class ReleaseError extends Error {
  readonly code = "ERR_RELEASE";
}

/** The command line or the store layout asks for something impossible. */
export class UsageError extends Error {
  readonly code = "ERR_USAGE";
}

/**
 * A store file is larger than it can legitimately be (a release over 1 MiB, a chunk frame over
 * the compressed bound of its size). Refused as the body streams in, before any signature or
 * digest check, so a hostile or broken mirror cannot exhaust memory.
 */
export class BodyTooLargeError extends Error {
  readonly code = "ERR_STORE_BODY_TOO_LARGE";
  /** The URL or path read. */
  readonly where: string;
  /** The most bytes that were allowed. */
  readonly limit: number;
  constructor(where: string, limit: number, what = "store file") {
    super(
      `Refusing ${where}: the ${what} is larger than ${limit} bytes, the most it can legitimately be ` +
        `(the mirror is broken or hostile, or the path is not a ${what}); check the store URL and the file on the server`,
    );
    this.where = where;
    this.limit = limit;
  }
}
