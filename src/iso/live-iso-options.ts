// How a live ISO is opened: where it is cached, which recipe, overrides, and how it is checked.
import type { CacheSpace } from "../block/chunk-cache.ts";
import type { Logger } from "../lib/log.ts";
import type { Family } from "./recipes.ts";
import type { IsoSignatureSpec } from "./iso-signature.ts";
import type { ChecksumsSpec } from "./signed-checksums.ts";

export interface LiveIsoOptions {
  /** Where the ISO's blocks and extracted files are kept. */
  cacheDir: string;
  /** Use this family's recipe instead of detecting one ("cdrom": the ISO's own boot record). */
  family?: Family | "cdrom";
  /** When no recipe fits and no kernel is given, boot the ISO's own boot record (cdrom). */
  cdromFallback?: boolean;
  /** Paths inside the ISO, replacing the recipe's. */
  kernel?: string;
  initrd?: string[];
  /** Replaces the recipe's command line; `{recipe}` stands for it. */
  cmdline?: string;
  /** Use only what the cache holds. */
  offline?: boolean;
  /** The quota an ISO by URL counts against (the chunk cache of the folder above cacheDir). */
  space?: CacheSpace;
  /** The whole ISO's SHA-256 (as its publisher lists it): checked before anything is served. */
  sha256?: string;
  /** Or the publisher's signed checksum list giving that SHA-256 (checked with gpgv). */
  checksums?: ChecksumsSpec;
  /** Or a detached signature over the whole ISO (Arch's .iso.sig), checked with gpgv. */
  signature?: IsoSignatureSpec;
  /** Bytes hashed so far while the whole ISO is checked against `sha256`. */
  onVerifyProgress?: (done: number, total: number) => void;
  logger?: Logger;
}
