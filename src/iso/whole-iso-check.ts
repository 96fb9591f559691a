// Checking a whole ISO before anything of it is served: against its SHA-256, or a detached
// signature gpgv checks as the bytes stream by; a pass is remembered beside the cached blocks.
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { BlockDevice } from "../block/block-device.ts";
import { RangeCacheDevice } from "../block/range-cache-device.ts";
import { deviceStream } from "../http/send-file.ts";
import type { Logger } from "../lib/log.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { LiveIsoError } from "./live-iso-error.ts";
import { ChecksumsError } from "./checksums-error.ts";
import { streamVerifier } from "./iso-signature.ts";
import type { IsoSignature } from "./iso-signature.ts";

/**
 * Checks `device` (a whole ISO), reading it all (through its cache, which keeps it): against a
 * SHA-256, or a detached signature over the ISO that gpgv checks as the bytes stream by. A match
 * is remembered in `marker` for this ISO's identity, so later runs rely on the block cache's own
 * per-block hashes instead of reading it all again.
 */
export async function verifyWholeIso(
  device: BlockDevice,
  expected: string | IsoSignature,
  options: {
    source: string;
    marker: string;
    onProgress?: (done: number, total: number) => void;
    logger?: Logger;
  },
): Promise<void> {
  const signed = typeof expected === "string" ? null : expected;
  const want = typeof expected === "string" ? expected.toLowerCase() : null;
  const token = signed ? `signature ${signed.digest}` : (want as string);
  // One line per check passed (several entries may check the same cached ISO differently).
  const remembered = (await readFile(options.marker, "utf8").catch(() => ""))
    .split("\n")
    .filter(Boolean);
  if (remembered.includes(token)) return;
  const started = Date.now();
  const hash = createHash("sha256");
  const verifier = signed ? await streamVerifier(signed, options.source) : null;
  let done = 0;
  let signer: string | undefined;
  try {
    if (device.size > 0) {
      for await (const piece of deviceStream(device, 0, device.size - 1, { piece: 4 << 20 })) {
        // gpgv hashes what it is fed; the SHA-256 is only needed when it is the check.
        if (verifier) await verifier.write(piece as Buffer);
        else hash.update(piece as Buffer);
        done += (piece as Buffer).length;
        options.onProgress?.(done, device.size);
      }
    }
    signer = (await verifier?.finish())?.signer;
  } catch (err) {
    await verifier?.abort();
    throw err instanceof ChecksumsError ? new LiveIsoError(err.message) : err;
  }
  const actual = want ? hash.digest("hex") : undefined;
  if (want && actual !== want) {
    throw new LiveIsoError(
      `${options.source} has SHA-256 ${actual}, not the ${want} it was given: it is not the ISO that was published (or the sha256 is wrong); refusing to boot it`,
    );
  }
  if (device instanceof RangeCacheDevice && device.stats.unkeptBytes > 0) {
    // Blocks not kept would be fetched again later, unchecked.
    throw new LiveIsoError(
      `${options.source} matches its ${signed ? "signature" : "sha256"} but does not fit in the cache's quota (${device.stats.unkeptBytes} bytes were not kept); an ISO checked whole must be cached whole: raise the quota (--cache-quota, or cache.json in the cache folder)`,
    );
  }
  await mkdir(dirname(options.marker), { recursive: true });
  await writeFileAtomic(options.marker, [...remembered, token].join("\n") + "\n");
  options.logger?.info(
    { iso: options.source, bytes: device.size, sha256: actual, signer, ms: Date.now() - started },
    signed ? "the whole ISO matches its signature" : "the whole ISO matches its sha256",
  );
}
