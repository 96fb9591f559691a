// A live ISO booted by URL: opened by Range requests through a block cache (never downloaded
// whole), its family's recipe chosen (or given), kernel and initrds extracted by range and kept
// verified on disk, and the ISO and its files served over HTTP with Range for the booted
// system (casper's url=, live-boot's fetch=, dracut's root=live:, archiso's http server).
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, realpath, rename, rm, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { basename, dirname, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BlockDevice } from "../block/block-device.ts";
import { FileDevice } from "../block/file-device.ts";
import type { CacheSpace } from "../block/chunk-cache.ts";
import { openCachedUrl, RangeCacheDevice } from "../block/range-cache-device.ts";
import { hashFile } from "../http/file-cache.ts";
import { deviceStream, sendRanges } from "../http/send-file.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { isErrno, tempPathFor, writeFileAtomic } from "../lib/atomic-file.ts";
import { IsoImage } from "./iso9660.ts";
import { detectRecipe, expandCmdline } from "./recipes.ts";
import type { BootRecipe, Family } from "./recipes.ts";
import {
  ChecksumsError,
  loadIsoSignature,
  signedSha256,
  streamVerifier,
} from "./signed-checksums.ts";
import type { ChecksumsSpec, IsoSignature, IsoSignatureSpec } from "./signed-checksums.ts";

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

/**
 * The bytes of an ISO: a local file, or a URL through the block cache under `cacheDir`; with
 * `sha256`, checked whole before it is returned (the check is remembered for the cached copy).
 */
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

/**
 * The recipe for `image`: the family detected (or forced), with the entry's kernel/initrd
 * overrides; a custom one when no family fits but the entry names a kernel; else, with
 * `cdromFallback` or `family: "cdrom"`, the ISO's own El Torito record (sanboot).
 */
async function chooseRecipe(
  image: IsoImage,
  source: string,
  options: LiveIsoOptions,
): Promise<BootRecipe> {
  const forced = options.family === "cdrom";
  const found = forced ? null : await detectRecipe(image, options.family as Family | undefined);
  if (found && found.family !== null) {
    return {
      ...found,
      kernel: options.kernel ?? found.kernel,
      initrd: options.initrd ?? found.initrd,
    };
  }
  if (found && options.kernel) {
    return {
      family: "custom",
      description: "kernel, initrd and cmdline from the entry",
      kernel: options.kernel,
      initrd: options.initrd ?? [],
      cmdline: "",
    };
  }
  // A forced family that does not fit is an error, never a CD-ROM boot.
  if (found && (!options.cdromFallback || options.family !== undefined)) {
    throw new LiveIsoError(`${source}: ${found.message}`, found.found);
  }
  const records = image.volume.elTorito.filter((e) => e.bootable);
  if (records.length === 0) {
    throw new LiveIsoError(
      `${source}: ${found ? `${found.message}; ` : ""}it has no bootable El Torito record either, so it cannot boot as a CD-ROM`,
      found ? found.found : await image.walk("/", 2),
    );
  }
  return {
    family: "cdrom",
    description: `no live-system recipe${forced ? " (recipe: cdrom)" : " fits"}: the machine boots the ISO's own boot record (${records.map((e) => e.platform).join(", ")}) through iPXE's sanboot`,
    kernel: "",
    initrd: [],
    cmdline: "",
  };
}

/** The ISO cannot be booted as configured: the message says why and what the ISO holds. */
export class LiveIsoError extends Error {
  readonly found: string[];
  constructor(message: string, found: string[] = []) {
    super(message);
    this.found = found;
  }
}

export interface ExtractedFile {
  path: string;
  size: number;
  sha256: string;
}

interface Checksum {
  algorithm: "md5" | "sha256";
  hex: string;
}

/** The checksum lists distributions put on their ISOs ("HEX  ./path" lines). */
const CHECKSUM_LISTS: [string, Checksum["algorithm"]][] = [
  ["/sha256sum.txt", "sha256"],
  ["/SHA256SUMS", "sha256"],
  ["/md5sum.txt", "md5"],
  ["/MD5SUMS", "md5"],
];

async function readChecksums(iso: IsoImage): Promise<Map<string, Checksum>> {
  const sums = new Map<string, Checksum>();
  for (const [list, algorithm] of CHECKSUM_LISTS) {
    const entry = await iso.stat(list);
    if (!entry || entry.directory || entry.size > 4 * 1024 * 1024) continue;
    const text = (await iso.readFile(list)).toString("utf8");
    const length = algorithm === "md5" ? 32 : 64;
    for (const line of text.split("\n")) {
      const m = /^([0-9a-fA-F]+)\s+\*?(?:\.\/|\/)?(.+?)\s*$/.exec(line);
      if (!m || m[1].length !== length) continue;
      const path = `/${m[2]}`;
      if (!sums.has(path)) sums.set(path, { algorithm, hex: m[1].toLowerCase() });
    }
  }
  return sums;
}

export class LiveIso {
  readonly source: string;
  readonly device: BlockDevice;
  readonly image: IsoImage;
  readonly recipe: BootRecipe;
  /** The ISO's file name in URLs (…/NAME.iso). */
  readonly fileName: string;
  /** A stable ETag base for this ISO's content. */
  readonly tag: string;
  readonly #sums: Map<string, Checksum>;
  readonly #filesDir: string;
  readonly #extracted = new Map<string, Promise<ExtractedFile>>();
  readonly #log: Logger;

  private constructor(
    source: string,
    device: BlockDevice,
    image: IsoImage,
    recipe: BootRecipe,
    sums: Map<string, Checksum>,
    filesDir: string,
    tag: string,
    log: Logger,
  ) {
    this.source = source;
    this.device = device;
    this.image = image;
    this.recipe = recipe;
    this.#sums = sums;
    this.#filesDir = filesDir;
    this.tag = tag;
    this.#log = log;
    const name = basename(source.replace(/[?#].*$/, "")).replace(/[^\w.-]/g, "_");
    this.fileName = /\.iso$/i.test(name) ? name : `${name || "image"}.iso`;
  }

  static async open(source: string, options: LiveIsoOptions): Promise<LiveIso> {
    const log = options.logger ?? silentLogger;
    const { device, identity } = await openIsoDevice(source, options);
    const key = sha(identity).slice(0, 32);
    try {
      const image = await IsoImage.open(device, source);
      const recipe = await chooseRecipe(image, source, options);
      if (options.cmdline !== undefined) {
        recipe.cmdline = options.cmdline.replaceAll("{recipe}", recipe.cmdline).trim();
      }
      for (const p of recipe.family === "cdrom" ? [] : [recipe.kernel, ...recipe.initrd]) {
        const e = await image.stat(p);
        if (!e || e.directory) {
          throw new LiveIsoError(`${source} has no file ${p} (the entry's kernel/initrd)`, [
            ...(await image.walk("/", 2)),
          ]);
        }
      }
      const sums = await readChecksums(image);
      return new LiveIso(
        source,
        device,
        image,
        recipe,
        sums,
        join(options.cacheDir, "files", key),
        key.slice(0, 16),
        log,
      );
    } catch (err) {
      await device.close();
      throw err;
    }
  }

  /** The recipe's command line with the URLs the ISO is served at under `base`. */
  cmdline(base: string): string {
    const tree = `${base}/tree/`;
    return expandCmdline(this.recipe.cmdline, {
      iso: `${base}/${this.fileName}`,
      tree,
      file: (p) => tree + p.replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/"),
    });
  }

  /**
   * A file of the ISO (kernel, initrd) on local disk: extracted by range once, checked against
   * the ISO's checksum list when it names the file, re-hashed once per run.
   */
  extract(path: string): Promise<ExtractedFile> {
    let p = this.#extracted.get(path);
    if (!p) {
      p = this.#extract(path);
      this.#extracted.set(path, p);
      p.catch(() => this.#extracted.delete(path));
    }
    return p;
  }

  async #extract(isoPath: string): Promise<ExtractedFile> {
    const entry = await this.image.stat(isoPath);
    if (!entry || entry.directory) throw new LiveIsoError(`${this.source} has no file ${isoPath}`);
    const id = sha(isoPath).slice(0, 32);
    const dataPath = join(this.#filesDir, `${id}.data`);
    const metaPath = join(this.#filesDir, `${id}.json`);
    try {
      const meta = JSON.parse(await readFile(metaPath, "utf8")) as ExtractedFile & { iso: string };
      if (meta.iso === isoPath && meta.size === entry.size) {
        const digest = await hashFile(dataPath);
        if (digest === meta.sha256) return { path: dataPath, size: meta.size, sha256: digest };
        this.#log.warn(
          { iso: this.source, file: isoPath },
          "extracted file is corrupt; extracting it again",
        );
      }
    } catch (err) {
      if (!isErrno(err, "ENOENT") && !(err instanceof SyntaxError)) throw err;
    }
    await mkdir(this.#filesDir, { recursive: true });
    const tmp = tempPathFor(dataPath);
    const started = Date.now();
    const sha256 = createHash("sha256");
    const listed = this.#sums.get(isoPath);
    const check = listed?.algorithm === "md5" ? createHash("md5") : null;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        sha256.update(chunk);
        check?.update(chunk);
        done(null, chunk);
      },
    });
    try {
      const body = deviceStream(this.image.file(entry, isoPath), 0, entry.size - 1);
      await pipeline(body, tap, createWriteStream(tmp));
      const digest = sha256.digest("hex");
      if (listed) {
        const actual = check ? check.digest("hex") : digest;
        if (actual !== listed.hex) {
          throw new LiveIsoError(
            `${isoPath} in ${this.source} has ${listed.algorithm} ${actual}, but the ISO's checksum list says ${listed.hex}: the ISO is damaged; refusing to boot it`,
          );
        }
      }
      await rename(tmp, dataPath);
      await writeFileAtomic(
        metaPath,
        JSON.stringify({ iso: isoPath, size: entry.size, sha256: digest }) + "\n",
      );
      this.#log.info(
        {
          iso: this.source,
          file: isoPath,
          bytes: entry.size,
          ms: Date.now() - started,
          checked: listed ? listed.algorithm : "no checksum list entry",
        },
        "extracted from the ISO",
      );
      return { path: dataPath, size: entry.size, sha256: digest };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * Serves `rest` of this ISO's URL space: "NAME.iso" (the whole image) or "tree/PATH" (one file
   * of it), with Range. Resolves with the body bytes sent, or -1 when there is no such file.
   */
  async send(req: IncomingMessage, res: ServerResponse, rest: string): Promise<number> {
    let body: BlockDevice;
    let tag: string;
    if (rest === this.fileName) {
      body = this.device;
      tag = this.tag;
    } else if (rest.startsWith("tree/")) {
      const path = `/${rest.slice(5)}`;
      let entry;
      try {
        entry = await this.image.stat(path.split("/").map(decodeURIComponent).join("/"));
      } catch {
        return -1; // "..", bad escapes
      }
      if (!entry || entry.directory) return -1;
      body = this.image.file(entry, path);
      tag = `${this.tag}-${entry.offset.toString(16)}`;
    } else {
      return -1;
    }
    return sendRanges(
      req,
      res,
      { size: body.size, etag: tag, stream: (start, end) => deviceStream(body, start, end) },
      { cacheControl: "max-age=3600" },
    );
  }

  /** How much of the ISO the cache holds and fetched (a URL), or null (a local file). */
  get cacheStats(): RangeCacheDevice["stats"] | null {
    return this.device instanceof RangeCacheDevice ? this.device.stats : null;
  }

  close(): Promise<void> {
    return this.device.close();
  }
}

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
