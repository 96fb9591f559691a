// A live ISO booted by URL: opened by Range requests through a block cache (never downloaded
// whole), its family's recipe chosen (or given), kernel and initrds extracted by range and kept
// verified on disk, and the ISO and its files served over HTTP with Range for the booted
// system (casper's url=, live-boot's fetch=, dracut's root=live:, archiso's http server).
// Opening and checking the ISO's bytes: iso-source.ts, whole-iso-check.ts; the recipe:
// choose-recipe.ts; the ISO's own checksum lists: checksum-lists.ts.
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { basename, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BlockDevice } from "../block/block-device.ts";
import { RangeCacheDevice } from "../block/range-cache-device.ts";
import { hashFile } from "../http/file-cache.ts";
import { deviceStream, sendRanges } from "../http/send-file.ts";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { isErrno, tempPathFor, writeFileAtomic } from "../lib/atomic-file.ts";
import { readChecksums } from "./checksum-lists.ts";
import type { Checksum } from "./checksum-lists.ts";
import { chooseRecipe } from "./choose-recipe.ts";
import { openIsoDevice } from "./iso-source.ts";
import { IsoImage } from "./iso9660.ts";
import { LiveIsoError } from "./live-iso-error.ts";
import type { LiveIsoOptions } from "./live-iso-options.ts";
import { expandCmdline, lazyOf } from "./recipes.ts";
import type { BootRecipe } from "./recipes.ts";

// (Kept importable from here, where they were first defined.)
export { openIsoDevice } from "./iso-source.ts";
export { LiveIsoError } from "./live-iso-error.ts";
export type { LiveIsoOptions } from "./live-iso-options.ts";
export { verifyWholeIso } from "./whole-iso-check.ts";

export interface ExtractedFile {
  path: string;
  size: number;
  sha256: string;
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
  /** Body bytes sent over HTTP (the ISO and its tree) since it opened. */
  httpBytes = 0;

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
      if (options.cmdline !== undefined) overrideCmdline(recipe, options.cmdline);
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
   * The lazy recipe's command line for the ISO exported as `nbd.name` at HOST:PORT (URLs under
   * `base` for the parts that still use HTTP), or null when the recipe has no lazy way or its
   * client cannot reach that port.
   */
  lazyCmdline(base: string, nbd: { host: string; port: number; name: string }): string | null {
    const lazy = lazyOf(this.recipe);
    if (!lazy || (lazy.port !== undefined && lazy.port !== nbd.port)) return null;
    const tree = `${base}/tree/`;
    return expandCmdline(
      lazy.cmdline,
      { iso: `${base}/${this.fileName}`, tree, file: (p) => tree + p.replace(/^\/+/, "") },
      { ...nbd, label: this.image.volume.volumeId },
    );
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
    const sent = await sendRanges(
      req,
      res,
      {
        size: body.size,
        etag: tag,
        stream: (start, end) => deviceStream(body, start, end),
        device: body,
      },
      { cacheControl: "max-age=3600" },
    );
    this.httpBytes += Math.max(0, sent);
    return sent;
  }

  /** What the download recipe copies into a machine's RAM (null: it copies nothing). */
  async downloadBytes(): Promise<number | null> {
    const what = this.recipe.downloads;
    if (what === null) return null;
    if (what === "iso") return this.device.size;
    return (await this.image.stat(what))?.size ?? null;
  }

  /** How much of the ISO the cache holds and fetched (a URL), or null (a local file). */
  get cacheStats(): RangeCacheDevice["stats"] | null {
    return this.device instanceof RangeCacheDevice ? this.device.stats : null;
  }

  close(): Promise<void> {
    return this.device.close();
  }
}

/**
 * The entry's `cmdline:` over the recipe's: `{recipe}` stands for the recipe's own (lazy or
 * download); without it the entry's line replaces both, and the lazy way is off (the recipe's
 * NBD parameters are gone with its line).
 */
function overrideCmdline(recipe: BootRecipe, cmdline: string): void {
  const lazy = lazyOf(recipe);
  recipe.cmdline = cmdline.replaceAll("{recipe}", recipe.cmdline).trim();
  if (!lazy) return;
  recipe.lazy = cmdline.includes("{recipe}")
    ? { ...lazy, cmdline: cmdline.replaceAll("{recipe}", lazy.cmdline).trim() }
    : {
        none: "the entry's cmdline-replace: is the whole command line (the recipe's NBD parameters are gone with it), so it boots as written",
      };
}

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
