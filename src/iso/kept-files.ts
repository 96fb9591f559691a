// Small signed files (checksum lists, signatures) fetched from their origin, bounded in size,
// and kept in the cache once verified, so an offline start (or an unreachable origin) can use
// and check the kept copies again.
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../lib/log.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { ChecksumsError } from "./checksums-error.ts";

const MAX_LIST_BYTES = 4 << 20;
const FETCH_TIMEOUT_MS = 30_000;

async function fetchBytes(location: string): Promise<Buffer> {
  if (!/^https?:\/\//i.test(location)) return readFile(location);
  const res = await fetch(location, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`);
  // Lists and signatures are small: a larger body is refused as it comes, never held whole.
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of res.body ?? []) {
    size += (part as Uint8Array).length;
    if (size > MAX_LIST_BYTES) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`larger than ${MAX_LIST_BYTES} bytes: not a checksum list or signature`);
    }
    parts.push(Buffer.from(part as Uint8Array));
  }
  return Buffer.concat(parts);
}

/**
 * Small signed files (a list, signatures) from their origin, or — offline, or when the origin
 * cannot be reached — the copies kept under `kept` by `keep` after they were verified.
 */
export async function fetchKept(
  parts: Record<string, string>,
  kept: string,
  options: { offline?: boolean; logger?: Logger; what: string },
): Promise<{ bytes: Record<string, Buffer>; from: "origin" | "cache"; keep: () => Promise<void> }> {
  const bytes: Record<string, Buffer> = {};
  try {
    if (options.offline) throw new Error("offline");
    for (const [name, location] of Object.entries(parts)) {
      bytes[name] = await fetchBytes(location).catch((err: Error) => {
        throw new Error(`${location}: ${err.message}`);
      });
    }
  } catch (err) {
    for (const name of Object.keys(parts)) {
      const copy = await readFile(join(kept, name)).catch(() => null);
      if (!copy) {
        throw new ChecksumsError(
          options.offline
            ? `${Object.values(parts)[0]}: offline, and no copy of the ${options.what} is kept; run once online`
            : `cannot fetch the ${options.what}: ${(err as Error).message}`,
        );
      }
      bytes[name] = copy;
    }
    if (!options.offline) {
      options.logger?.warn(
        { from: Object.values(parts), error: (err as Error).message },
        `${options.what} unreachable; using the copy kept in the cache`,
      );
    }
    return { bytes, from: "cache", keep: () => Promise.resolve() };
  }
  const keep = async (): Promise<void> => {
    await mkdir(kept, { recursive: true });
    for (const [name, b] of Object.entries(bytes)) await writeFileAtomic(join(kept, name), b);
  };
  return { bytes, from: "origin", keep };
}

/** Where the copies of the files at `locations` are kept under `cacheDir`. */
export function keptDir(cacheDir: string, ...locations: (string | undefined)[]): string {
  const key = createHash("sha256").update(locations.map((l) => l ?? "").join("\n"));
  return join(cacheDir, "checksums", key.digest("hex").slice(0, 32));
}
