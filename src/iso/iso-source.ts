// The bytes of an ISO to boot: a local file, or a URL through the block cache (never
// downloaded whole), checked whole first when a SHA-256, a signed checksum list or a detached
// signature vouches for it.
import { createHash } from "node:crypto";
import { realpath, stat } from "node:fs/promises";
import { join } from "node:path";
import type { BlockDevice } from "../block/block-device.ts";
import { FileDevice } from "../block/file-device.ts";
import { openCachedUrl, RangeCacheDevice } from "../block/range-cache-device.ts";
import { silentLogger } from "../lib/log.ts";
import { LiveIsoError } from "./live-iso-error.ts";
import type { LiveIsoOptions } from "./live-iso-options.ts";
import { loadIsoSignature } from "./iso-signature.ts";
import type { IsoSignature } from "./iso-signature.ts";
import { signedSha256 } from "./signed-checksums.ts";
import { verifyWholeIso } from "./whole-iso-check.ts";

/**
 * The bytes of an ISO: a local file, or a URL through the block cache under `cacheDir`; with
 * `sha256`, checked whole before it is returned (the check is remembered for the cached copy).
 */

/**
 * The ISO cache's block: what the origin sends for a read that misses. A live system reading
 * its squashfs over NBD reads scattered 128 KiB pieces; 1 MiB blocks fetched ~2.6 times what it
 * read (Debian live to login), 256 KiB blocks much less, while long reads (kernel, initrd, a
 * download) still go out as one request for a run of missing blocks.
 */
export const ISO_BLOCK_SIZE = 256 * 1024;

export async function openIsoDevice(
  source: string,
  options: Pick<
    LiveIsoOptions,
    | "cacheDir"
    | "offline"
    | "space"
    | "sha256"
    | "checksums"
    | "signature"
    | "onVerifyProgress"
    | "logger"
  >,
): Promise<{ device: BlockDevice; identity: string }> {
  const log = options.logger ?? silentLogger;
  let expected: string | IsoSignature | undefined = options.sha256;
  if (options.signature) {
    expected = await loadIsoSignature(options.signature, {
      cacheDir: options.cacheDir,
      offline: options.offline,
      logger: log,
    }).catch((err: Error) => {
      throw new LiveIsoError(err.message);
    });
  }
  if (options.checksums) {
    // Before any of the ISO is read: a list that cannot be trusted stops here.
    const signed = await signedSha256(options.checksums, source, {
      cacheDir: options.cacheDir,
      offline: options.offline,
      logger: log,
    }).catch((err: Error) => {
      throw new LiveIsoError(err.message);
    });
    expected = signed.sha256;
  }
  let device: BlockDevice;
  let identity: string;
  if (/^https?:\/\//i.test(source)) {
    const cached = await openCachedUrl(source, options.cacheDir, {
      blockSize: ISO_BLOCK_SIZE,
      offline: options.offline,
      logger: log,
      space: options.space,
    }).catch((err: Error) => {
      throw new LiveIsoError(err.message);
    });
    identity = cached.identity;
    device = cached;
  } else {
    const path = await realpath(source).catch(() => {
      throw new LiveIsoError(`${source} does not exist`);
    });
    const st = await stat(path);
    identity = `${path}\n${st.size}\n${st.mtimeMs}`;
    device = await FileDevice.open(path, { readOnly: true });
  }
  if (expected) {
    const key = sha(identity).slice(0, 32);
    await verifyWholeIso(device, expected, {
      source,
      // Beside the blocks it vouches for: evicted with them, so refetched blocks are checked
      // whole again.
      marker: join(
        device instanceof RangeCacheDevice ? device.dir : join(options.cacheDir, "files", key),
        "verified-sha256",
      ),
      onProgress: options.onVerifyProgress,
      logger: log,
    }).catch(async (err: unknown) => {
      await device.close();
      throw err;
    });
  }
  return { device, identity };
}

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
