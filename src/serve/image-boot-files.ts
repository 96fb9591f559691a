// The kernels image entries take from their images (an `image` entry without kernel:): for
// each release, what the image boots (src/disk/image-boot.ts) with its kernel and initrds copied
// out once into CACHE/image-boot/ID/ — from the release's verified chunks — and its initrd looked
// through for an nbd-client (src/boot/initrd-scan.ts), so the plan knows whether to add the
// server's NBD overlay. Kept across restarts (boot.json written last, atomically).
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { BlockDevice } from "../block/block-device.ts";
import { scanInitrd } from "../boot/initrd-scan.ts";
import { copyImageBoot, findImageBoot } from "../disk/image-boot.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import type { Logger } from "../lib/log.ts";

/** Releases whose boot files stay known in memory. */
const MAX_KNOWN = 64;

export interface ExtractedBoot {
  /** Local copies. */
  kernel: string;
  initrds: string[];
  /** Their paths in the image ("/boot/vmlinuz-6.1.0-18-amd64"). */
  kernelPath: string;
  initrdPaths: string[];
  version?: string;
  /** The image's command line without root= and BOOT_IMAGE=. */
  cmdline: string;
  from: string;
  rootSpec?: string;
  /** The root on the machine's NBD device (/dev/nbd0p2). */
  nbdRoot: string;
  /** The initrd's own nbd-client, when it has one (else the overlay brings one). */
  nbdClient?: string;
  /** Who built the initrd (the overlay fits initramfs-tools). */
  builder: string;
  /** Why the initrd could not be looked through, when it could not. */
  scanError?: string;
}

export class ImageBootFiles {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #known = new Map<string, Promise<ExtractedBoot>>();
  /** The ones copied out, by release. */
  readonly #done = new Map<string, ExtractedBoot>();

  constructor(cacheDir: string, log: Logger) {
    this.#dir = join(cacheDir, "image-boot");
    this.#log = log;
  }

  /** What the release `baseId` (read through `device`) boots, copied out on first use. */
  of(baseId: string, label: string, device: BlockDevice): Promise<ExtractedBoot> {
    let p = this.#known.get(baseId);
    if (!p) {
      p = this.#extract(baseId, label, device);
      this.#known.set(baseId, p);
      const mine = p;
      p.then(
        (b) => this.#done.set(baseId, b),
        () => {
          if (this.#known.get(baseId) === mine) this.#known.delete(baseId);
        },
      );
      if (this.#known.size > MAX_KNOWN) {
        const oldest = this.#known.keys().next().value!;
        this.#known.delete(oldest);
        this.#done.delete(oldest);
      }
    }
    return p;
  }

  /** What the release boots, if it was copied out already (never starts a copy). */
  known(baseId: string): ExtractedBoot | undefined {
    return this.#done.get(baseId);
  }

  async #extract(baseId: string, label: string, device: BlockDevice): Promise<ExtractedBoot> {
    const dir = join(this.#dir, createHash("sha256").update(baseId).digest("hex").slice(0, 32));
    const meta = join(dir, "boot.json");
    if (existsSync(meta)) {
      try {
        const known = JSON.parse(readFileSync(meta, "utf8")) as ExtractedBoot;
        if ([known.kernel, ...known.initrds].every((f) => existsSync(f))) return known;
      } catch {
        // Rebuilt below.
      }
    }
    const started = Date.now();
    const facts = await findImageBoot(device);
    const boot = facts.boot;
    if (!boot) throw new Error(`${label}: ${facts.problems.join("; ")}`);
    await mkdir(dir, { recursive: true });
    const { kernel, initrds } = await copyImageBoot(device, { ...facts, boot }, dir);
    let nbdClient: string | undefined;
    let builder = "unknown";
    let scanError: string | undefined;
    for (const path of initrds) {
      const scan = await scanInitrd(path).catch((err: Error) => {
        scanError ??= err.message;
        this.#log.warn(
          { image: label, err: err.message },
          "cannot look through the image's initrd",
        );
        return null;
      });
      nbdClient ??= scan?.nbdClient;
      if (scan && scan.builder !== "unknown") builder = scan.builder;
    }
    const found: ExtractedBoot = {
      kernel,
      initrds,
      kernelPath: boot.kernel.path,
      initrdPaths: boot.initrds.map((f) => f.path),
      version: boot.version,
      cmdline: boot.cmdline,
      from: boot.from,
      rootSpec: boot.rootSpec,
      nbdRoot: boot.nbdRoot,
      nbdClient,
      builder,
      ...(scanError && !nbdClient ? { scanError } : {}),
    };
    await writeFileAtomic(meta, JSON.stringify(found, null, 2) + "\n");
    this.#log.info(
      {
        image: label,
        kernel: found.kernelPath,
        root: found.nbdRoot,
        nbdClient: nbdClient ?? null,
        ms: Date.now() - started,
      },
      "image boot files copied out",
    );
    return found;
  }
}
