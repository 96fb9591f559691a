// Messages between `pack` and its worker threads.

export interface PackWorkerInit {
  chunksDir: string;
  level: number;
  maxChunk: number;
}

export interface PackBatch {
  seq: number;
  buffer: ArrayBuffer;
  /** Offset of the first chunk in `buffer`. */
  start: number;
  /** End offsets of each chunk, absolute in `buffer`. */
  cuts: number[];
}

/** Per chunk: its id, how it was handled, and the compressed bytes written (0 unless new). */
export interface PackBatchResult {
  seq: number;
  /** The batch's buffer, handed back for reuse so memory stays flat. */
  buffer: ArrayBuffer;
  ids: string[];
  kinds: Uint8Array;
  stored: number[];
}

export const KIND_NEW = 0;
export const KIND_REUSED = 1;
export const KIND_ZERO = 2;
