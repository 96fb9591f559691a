// The block device interface every backend and layer implements, nbdkit-filter style: a layer
// holds a `next` device and passes through whatever it does not change.

/** A run of the device with uniform allocation state (NBD base:allocation). */
export interface Extent {
  offset: number;
  length: number;
  /** Not allocated: reading it costs nothing (an all-zero chunk, an untouched overlay area). */
  hole: boolean;
  /** Reads as zeros. */
  zero: boolean;
}

export interface WriteOptions {
  /** Force Unit Access: durable before the call resolves. */
  fua?: boolean;
}

export interface BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  /** Reads exactly `length` bytes at `offset` (the caller keeps within `size`). */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Reads `into.length` bytes at `offset` into the caller's buffer (a server reuses its reply
   * buffers). Only where the device fills it without a buffer of its own; else use read().
   */
  readInto?(offset: number, into: Buffer): Promise<void>;
  /**
   * Fills `into` at once and returns true when the bytes are at hand (verified, in the page
   * cache); false sends the caller to readInto (what `into` holds then is unspecified). A
   * server answers a warm read this way without a promise. A layer that changes what reads
   * return implements it only where it can say the same as its readInto.
   */
  readIntoNow?(offset: number, into: Buffer): boolean;
  write?(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Makes every completed write durable. */
  flush?(): Promise<void>;
  /** The range's contents become unspecified (here: zeros where the layer can). */
  trim?(offset: number, length: number): Promise<void>;
  writeZeroes?(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Allocation map covering at least [offset, offset+1), at most [offset, offset+length). */
  extents?(offset: number, length: number): Promise<Extent[]>;
  close(): Promise<void>;
}

/** An I/O failure the client should see as EIO (never as wrong data). */
export class BlockIoError extends Error {
  readonly code = "ERR_BLOCK_IO";
}

/** Writes to a device that cannot take them. */
export class ReadOnlyError extends Error {
  readonly code = "ERR_READ_ONLY";
}

/**
 * Waits for every job, then throws the first failure. For reads into a caller's buffer: the
 * buffer may be reused as soon as the call fails, so no part may still be landing in it.
 */
export async function settleAll<T>(jobs: Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(jobs);
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

/** Fills `into` from `device` at `offset`: in place where it reads into buffers, else copied. */
export async function readIntoFrom(
  device: BlockDevice,
  offset: number,
  into: Buffer,
): Promise<void> {
  if (device.readInto) return device.readInto(offset, into);
  if (into.length > 0) (await device.read(offset, into.length)).copy(into);
}

/** A request outside the device. */
export class OutOfRangeError extends Error {
  readonly code = "ERR_BLOCK_RANGE";
}

export function checkRange(device: { size: number }, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > device.size
  ) {
    throw new OutOfRangeError(
      `Request [${offset}, ${offset + length}) is outside the device (size ${device.size})`,
    );
  }
}

/** The whole range as one allocated extent: for devices that know nothing better. */
export function dataExtent(offset: number, length: number): Extent[] {
  return [{ offset, length, hole: false, zero: false }];
}

/** Merges neighbouring extents with the same state. */
export function mergeExtents(extents: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    if (e.length === 0) continue;
    const last = out[out.length - 1];
    if (
      last &&
      last.hole === e.hole &&
      last.zero === e.zero &&
      last.offset + last.length === e.offset
    ) {
      last.length += e.length;
    } else out.push({ ...e });
  }
  return out;
}
