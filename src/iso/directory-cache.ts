// Parsed ISO directories by extent, least recently used first; bounded by count and bytes.
import type { IsoEntry } from "./iso-entry.ts";

/** Parsed directories by extent, least recently used first; bounded by count and bytes. */
export class DirectoryCache {
  readonly #max: number;
  readonly #maxBytes: number;
  readonly #map = new Map<string, { entries: IsoEntry[]; bytes: number }>();
  #bytes = 0;

  constructor(max: number, maxBytes: number) {
    this.#max = max;
    this.#maxBytes = maxBytes;
  }

  get size(): number {
    return this.#map.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get(key: string): IsoEntry[] | undefined {
    const hit = this.#map.get(key);
    if (!hit) return undefined;
    this.#map.delete(key);
    this.#map.set(key, hit);
    return hit.entries;
  }

  set(key: string, entries: IsoEntry[], bytes: number): void {
    if (this.#map.has(key) || bytes > this.#maxBytes || this.#max <= 0) return;
    this.#map.set(key, { entries, bytes });
    this.#bytes += bytes;
    for (const [k, v] of this.#map) {
      if (this.#map.size <= this.#max && this.#bytes <= this.#maxBytes) break;
      this.#map.delete(k);
      this.#bytes -= v.bytes;
    }
  }
}
