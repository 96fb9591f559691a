// `inetboot extract`: rebuild an image byte-exact from its index, verifying every chunk.
// Output goes to a temporary file renamed into place only when every chunk was verified and
// written, so a failed extract never leaves wrong bytes under the requested name.
import { open, rename, stat, unlink } from "node:fs/promises";
import type { IndexChunk } from "./caibx.ts";
import { isZeroChunk, loadChunk } from "./chunks.ts";
import { tempPathFor } from "../lib/atomic-file.ts";
import { mapLimit } from "./parallel.ts";
import type { OpenedImage } from "./source.ts";
import { isUrl } from "./open-store.ts";

export const DEFAULT_LOCAL_CONCURRENCY = 8;
export const DEFAULT_HTTP_CONCURRENCY = 16;

export interface ExtractProgress {
  bytesDone: number;
  totalBytes: number;
  chunksFetched: number;
  bytesFetched: number;
}

export interface ExtractSummary extends ExtractProgress {
  chunks: number;
  uniqueChunks: number;
  zeroChunks: number;
  seconds: number;
}

/** Groups chunks by id so a chunk that repeats is fetched and verified once. */
export function groupChunks(chunks: readonly IndexChunk[]): Map<string, IndexChunk[]> {
  const groups = new Map<string, IndexChunk[]>();
  for (const c of chunks) {
    const list = groups.get(c.id);
    if (list) list.push(c);
    else groups.set(c.id, [c]);
  }
  return groups;
}

export async function extractImage(
  image: OpenedImage,
  out: string,
  options: { concurrency?: number; onProgress?: (p: ExtractProgress) => void } = {},
): Promise<ExtractSummary> {
  const started = performance.now();
  const { index, chunks } = image;
  const existing = await stat(out).catch(() => null);
  const direct = existing !== null && (existing.isBlockDevice() || existing.isCharacterDevice());
  const target = direct ? out : tempPathFor(out);
  const fh = await open(target, direct ? "r+" : "wx", 0o644);
  const progress: ExtractProgress = {
    bytesDone: 0,
    totalBytes: index.size,
    chunksFetched: 0,
    bytesFetched: 0,
  };
  let zeroChunks = 0;
  const groups = [...groupChunks(index.chunks).values()];
  try {
    // Sparse output: the file gets its size first; zero chunks are never written.
    if (!direct) await fh.truncate(index.size);
    const concurrency =
      options.concurrency ??
      (isUrl(chunks.reader.location) ? DEFAULT_HTTP_CONCURRENCY : DEFAULT_LOCAL_CONCURRENCY);
    await mapLimit(groups, concurrency, async (group) => {
      const first = group[0];
      if (isZeroChunk(first)) {
        zeroChunks += group.length;
        if (direct) {
          for (const c of group) await fh.write(Buffer.alloc(c.size), 0, c.size, c.offset);
        }
      } else {
        const data = await loadChunk(chunks, first);
        progress.chunksFetched++;
        progress.bytesFetched += data.length;
        for (const c of group) await fh.write(data, 0, c.size, c.offset);
      }
      for (const c of group) progress.bytesDone += c.size;
      options.onProgress?.({ ...progress });
    });
    await fh.sync();
  } catch (err) {
    await fh.close();
    if (!direct) await unlink(target).catch(() => undefined);
    throw err;
  }
  await fh.close();
  if (!direct) await rename(target, out);
  return {
    ...progress,
    chunks: index.chunks.length,
    uniqueChunks: groups.length,
    zeroChunks,
    seconds: (performance.now() - started) / 1000,
  };
}
