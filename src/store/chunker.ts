// Content-defined chunking with casync's buzhash rule, so cut points match `casync make`
// byte for byte (same window, same table, same discriminator, same min/max handling).
import { BUZHASH_TABLE } from "./buzhash-table.ts";

/** Chunk size limits in bytes, as casync's `--chunk-size=MIN:AVG:MAX`. */
export interface ChunkerParams {
  min: number;
  avg: number;
  max: number;
}

/** casync's default chunk sizes: 16K:64K:256K. */
export const DEFAULT_CHUNKER: Readonly<ChunkerParams> = Object.freeze({
  min: 16 * 1024,
  avg: 64 * 1024,
  max: 256 * 1024,
});

/** The rolling hash window, in bytes (casync's CA_CHUNKER_WINDOW_SIZE). */
export const WINDOW_SIZE = 48;
/** The largest chunk we accept (casync's CA_CHUNK_SIZE_LIMIT_MAX is 128 MiB; we cap lower). */
export const MAX_CHUNK_LIMIT = 16 * 1024 * 1024;
/** The smallest minimum chunk size we accept: a chunk must cover at least one hash window. */
export const MIN_CHUNK_LIMIT = 64;

export class ChunkerParamsError extends Error {
  readonly code = "ERR_CHUNKER_PARAMS";
}

/** Parses `MIN:AVG:MAX` with optional K/M suffixes (`16K:64K:256K`). */
export function parseChunkSize(text: string): ChunkerParams {
  const parts = text.split(":");
  if (parts.length !== 3) {
    throw new ChunkerParamsError(
      `Cannot parse chunk size "${text}": expected MIN:AVG:MAX such as 16K:64K:256K`,
    );
  }
  const [min, avg, max] = parts.map((part) => parseSize(part, text));
  return validateChunkerParams({ min, avg, max });
}

function parseSize(part: string, whole: string): number {
  const match = /^(\d+)([KkMm]?)$/.exec(part.trim());
  if (!match) {
    throw new ChunkerParamsError(
      `Cannot parse chunk size "${whole}": "${part}" is not a number of bytes (suffix K or M allowed)`,
    );
  }
  const unit = match[2].toUpperCase() === "K" ? 1024 : match[2].toUpperCase() === "M" ? 1 << 20 : 1;
  return Number(match[1]) * unit;
}

export function validateChunkerParams(params: ChunkerParams): ChunkerParams {
  const { min, avg, max } = params;
  if (![min, avg, max].every(Number.isSafeInteger)) {
    throw new ChunkerParamsError(`Chunk sizes must be integers, got ${min}:${avg}:${max}`);
  }
  if (min < MIN_CHUNK_LIMIT) {
    throw new ChunkerParamsError(
      `Minimum chunk size is ${min}, expected at least ${MIN_CHUNK_LIMIT}`,
    );
  }
  if (max > MAX_CHUNK_LIMIT) {
    throw new ChunkerParamsError(
      `Maximum chunk size is ${max}, expected at most ${MAX_CHUNK_LIMIT}`,
    );
  }
  if (!(min <= avg && avg <= max)) {
    throw new ChunkerParamsError(`Chunk sizes ${min}:${avg}:${max} must satisfy MIN <= AVG <= MAX`);
  }
  return { min, avg, max };
}

/**
 * casync's cut test divisor: chunks end up ~1.32x larger than the raw average, so the
 * discriminator is corrected by the same empirical formula, then clamped to [min, max].
 */
export function discriminatorFor(params: ChunkerParams): number {
  const d = Math.trunc(params.avg / (-1.42888852e-7 * params.avg + 1.33237515));
  return Math.min(Math.max(d, params.min), params.max);
}

function rol32(x: number, n: number): number {
  const s = n & 31;
  return s === 0 ? x >>> 0 : ((x << s) | (x >>> (32 - s))) >>> 0;
}

const ZERO_BLOCK = new Uint8Array(64 * 1024);

function isZero(data: Uint8Array, from: number, to: number): boolean {
  return Buffer.compare(data.subarray(from, to), ZERO_BLOCK.subarray(0, to - from)) === 0;
}

/** The first index in [from, limit) whose byte is not zero, or `limit`. */
function zeroRunEnd(data: Uint8Array, from: number, limit: number): number {
  let pos = from;
  for (const step of [ZERO_BLOCK.length, 4096, 64]) {
    while (pos + step <= limit && isZero(data, pos, pos + step)) pos += step;
  }
  while (pos < limit && data[pos] === 0) pos++;
  return pos;
}

/** Precomputed per-parameter state so the hot loop does no setup work. */
export interface Chunker {
  readonly params: ChunkerParams;
  /**
   * Returns the end (exclusive, absolute index into `data`) of the chunk that starts at `start`.
   * The caller must pass at least `max` bytes (`end - start >= max`) unless `end` is the end of
   * the input, in which case whatever remains is the last chunk.
   */
  findCut(data: Uint8Array, start: number, end: number): number;
}

export function createChunker(params: ChunkerParams = DEFAULT_CHUNKER): Chunker {
  const { min, max } = validateChunkerParams(params);
  const discriminator = discriminatorFor(params);
  const target = discriminator - 1;
  const table = BUZHASH_TABLE;
  // The outgoing byte was rotated WINDOW_SIZE times since it entered.
  const outTable = new Uint32Array(256);
  for (let i = 0; i < 256; i++) outTable[i] = rol32(table[i], WINDOW_SIZE);
  // casync skips hashing the first (min - window) bytes of each chunk: the first cut test
  // happens once the chunk is `min` bytes long, over the window of its last 48 bytes.
  const firstTest = Math.max(min, WINDOW_SIZE);
  // Over a window of zeros the rolling hash is a constant. When that constant is not a cut,
  // a run of zeros cannot hold a cut before `max`, so the scan can jump over it at memcmp speed
  // (disk images are mostly zeros). Same cut points, much less work.
  let hZero = 0;
  for (let i = 0; i < WINDOW_SIZE; i++) hZero = (((hZero << 1) | (hZero >>> 31)) ^ table[0]) >>> 0;
  const zeroSkip = hZero % discriminator !== target;

  // The cut test h % discriminator === discriminator - 1 is (h + 1) divisible by it. With
  // discriminator = 2^k * m (m odd), x is divisible by m exactly when x * m^-1 (mod 2^32) is at
  // most (2^32 - 1) / m: one multiply instead of a division per byte (1.3x the whole loop).
  // A position that passes (h = 2^32 - 1 wraps x to 0, which passes) is confirmed with the
  // modulo itself: the filter never rejects a cut, and lets nothing else through.
  let k = 0;
  let m = discriminator;
  while ((m & 1) === 0) {
    m >>>= 1;
    k++;
  }
  let inverse = m; // Newton's iteration: each step doubles the bits of m^-1 that are right
  for (let i = 0; i < 5; i++) inverse = Math.imul(inverse, 2 - Math.imul(m, inverse));
  const limit = Math.floor(0xffffffff / m);
  const lowBits = (1 << k) - 1;

  // The hot loop: h stays a 32-bit integer (int32 in the JIT), the tables and the constants
  // above belong to this closure.
  let rolled = 0;
  const roll = (data: Uint8Array, from: number, to: number, h0: number): number => {
    let h = h0 | 0;
    for (let pos = from; pos < to;) {
      h = ((h << 1) | (h >>> 31)) ^ outTable[data[pos - WINDOW_SIZE]] ^ table[data[pos]];
      pos++;
      const x = (h + 1) | 0;
      if (
        (x & lowBits) === 0 &&
        Math.imul(x >>> k, inverse) >>> 0 <= limit &&
        (h >>> 0) % discriminator === target
      )
        return pos;
    }
    rolled = h >>> 0;
    return -1;
  };

  return {
    params: { ...params },
    findCut(data, start, end) {
      const available = end - start;
      if (available <= firstTest) return end;
      const limit = Math.min(end, start + max);
      let pos = start + firstTest;
      let h = 0;
      for (let i = pos - WINDOW_SIZE; i < pos; i++) {
        h = (((h << 1) | (h >>> 31)) ^ table[data[i]]) >>> 0;
      }
      if (pos - start >= max || h % discriminator === target) return pos;
      while (pos < limit) {
        // Between blocks: jump over a run of zeros (tested once per block, off the hot loop).
        if (h === hZero && zeroSkip && isZero(data, pos - WINDOW_SIZE, pos)) {
          pos = zeroRunEnd(data, pos, limit);
          if (pos >= limit) return limit;
        }
        const blockEnd = Math.min(limit, pos + 4096);
        const cut = roll(data, pos, blockEnd, h);
        if (cut >= 0) return cut;
        pos = blockEnd;
        h = rolled;
      }
      return limit;
    },
  };
}
