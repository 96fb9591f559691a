// An ISO 9660 reader over any BlockDevice (a local file, or an ISO on a web server read by Range
// requests, never downloaded whole): the primary and supplementary (Joliet) volume descriptors,
// directory records with Rock Ridge names (NM; CE continuations are not followed), files in
// several extents (4 GiB and more), and the El Torito boot catalog. It reads descriptors and
// directories only; file contents stay where they are, as extents (offset, size) the caller
// reads or serves by range. Records and names: directory-record.ts; the cache of parsed
// directories: directory-cache.ts; the boot catalog: el-torito.ts; a file: iso-file-device.ts.
import type { BlockDevice } from "../block/block-device.ts";
import { stripUndefined } from "../lib/options.ts";
import { DirectoryCache } from "./directory-cache.ts";
import { parseDirectory, parseRecord } from "./directory-record.ts";
import type { NameStyle, RawRecord, Walk } from "./directory-record.ts";
import { readBootCatalog } from "./el-torito.ts";
import type { ElToritoEntry } from "./el-torito.ts";
import { IsoFileDevice } from "./iso-file-device.ts";
import { isNoDirectory, IsoFormatError, SECTOR } from "./iso-entry.ts";
import type { IsoEntry } from "./iso-entry.ts";

// (Kept importable from here, where they were first defined.)
export { IsoFormatError, SECTOR } from "./iso-entry.ts";
export type { IsoEntry } from "./iso-entry.ts";
export { IsoFileDevice } from "./iso-file-device.ts";
export type { ElToritoEntry } from "./el-torito.ts";

export interface IsoVolume {
  volumeId: string;
  systemId: string;
  publisher: string;
  application: string;
  created: string | null;
  blocks: number;
  joliet: boolean;
  rockRidge: boolean;
  elTorito: ElToritoEntry[];
}

const text = (b: Buffer, from: number, to: number): string =>
  b.toString("latin1", from, to).replace(/[\s\0]+$/, "");

/** An ISO 9660 17-byte date: "YYYYMMDDHHMMSScc" + offset, or null when unset. */
function longDate(b: Buffer, at: number): string | null {
  const s = b.toString("latin1", at, at + 14);
  if (!/^\d{14}$/.test(s) || s === "00000000000000") return null;
  return `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(8, 10)}:${s.slice(10, 12)}:${s.slice(12, 14)}Z`;
}

/** Directories larger than this are refused (a corrupt size would read the whole image). */
const MAX_DIRECTORY = 64 * 1024 * 1024;

/** Limits on what one image may make the reader hold or read (see IsoImage.open). */
export interface IsoOptions {
  /** Directories kept parsed (least recently used dropped first). */
  cacheDirectories?: number;
  /** Estimated bytes of parsed directories kept (a directory bigger than this is not kept). */
  cacheBytes?: number;
  /** Path components one lookup may descend through. */
  maxDepth?: number;
  /** Directory records one lookup may parse, over all the directories it reads. */
  maxRecordsPerLookup?: number;
}

/** Directories cached: every directory a boot touches (a few dozen) many times over. */
export const DEFAULT_ISO_CACHE_DIRECTORIES: number = 1024;
/** Parsed directory bytes cached (estimated: on-disc size plus ~160 bytes per entry). */
export const DEFAULT_ISO_CACHE_BYTES: number = 32 * 1024 * 1024;
/** Path depth: Linux ISOs nest < 12 deep; ISO 9660 itself allowed 8 before Rock Ridge. */
export const DEFAULT_ISO_MAX_DEPTH: number = 64;
/** Records per lookup: 100,000-file directories still fit; ~40 MB of entries at most. */
export const DEFAULT_ISO_MAX_RECORDS_PER_LOOKUP: number = 262_144;

export const DEFAULT_ISO_OPTIONS = Object.freeze({
  cacheDirectories: DEFAULT_ISO_CACHE_DIRECTORIES,
  cacheBytes: DEFAULT_ISO_CACHE_BYTES,
  maxDepth: DEFAULT_ISO_MAX_DEPTH,
  maxRecordsPerLookup: DEFAULT_ISO_MAX_RECORDS_PER_LOOKUP,
});

/** Estimated memory of one parsed entry beyond its name (object, strings, map slot). */
const ENTRY_OVERHEAD = 160;

export class IsoImage {
  readonly device: BlockDevice;
  readonly volume: IsoVolume;
  readonly #root: RawRecord;
  /** Use Joliet names (UCS-2) from this root instead, when there is no Rock Ridge. */
  readonly #jolietRoot: RawRecord | null;
  readonly #rockRidge: boolean;
  /** Bytes skipped at the start of each system use area (SP's LEN_SKP). */
  readonly #suSkip: number;
  readonly #opts: typeof DEFAULT_ISO_OPTIONS;
  readonly #dirs: DirectoryCache;
  /** Directories being read now, by extent (concurrent lookups share one read). */
  readonly #reading = new Map<string, Promise<IsoEntry[]>>();

  private constructor(
    device: BlockDevice,
    volume: IsoVolume,
    root: RawRecord,
    jolietRoot: RawRecord | null,
    suSkip: number,
    options: IsoOptions,
  ) {
    const { cacheDirectories, cacheBytes, maxDepth, maxRecordsPerLookup } = options;
    this.#opts = {
      ...DEFAULT_ISO_OPTIONS,
      ...stripUndefined({ cacheDirectories, cacheBytes, maxDepth, maxRecordsPerLookup }),
    };
    this.#dirs = new DirectoryCache(this.#opts.cacheDirectories, this.#opts.cacheBytes);
    this.device = device;
    this.volume = volume;
    this.#root = root;
    this.#jolietRoot = volume.rockRidge ? null : jolietRoot;
    this.#rockRidge = volume.rockRidge;
    this.#suSkip = suSkip;
  }

  static async open(
    device: BlockDevice,
    name = "the image",
    options: IsoOptions = {},
  ): Promise<IsoImage> {
    if (device.size < 17 * SECTOR) {
      throw new IsoFormatError(`${name} is ${device.size} bytes: too small for an ISO 9660 image`);
    }
    let primary: Buffer | null = null;
    let joliet: Buffer | null = null;
    let bootCatalog: number | null = null;
    for (let sector = 16; sector < 16 + 64; sector++) {
      if ((sector + 1) * SECTOR > device.size) break;
      const d = await device.read(sector * SECTOR, SECTOR);
      if (d.toString("latin1", 1, 6) !== "CD001") {
        throw new IsoFormatError(
          `${name} is not an ISO 9660 image (no CD001 volume descriptor at sector ${sector})`,
        );
      }
      const type = d[0];
      if (type === 255) break;
      if (type === 1) primary ??= d;
      else if (type === 2) {
        const esc = d.toString("latin1", 88, 91);
        if (esc === "%/@" || esc === "%/C" || esc === "%/E") joliet ??= d;
      } else if (type === 0 && text(d, 7, 39) === "EL TORITO SPECIFICATION") {
        bootCatalog = d.readUInt32LE(71);
      }
    }
    if (!primary) throw new IsoFormatError(`${name} has no primary volume descriptor`);
    const root = parseRecord(primary, 156, `${name} primary volume descriptor`);
    if (!root) throw new IsoFormatError(`${name} has no root directory record`);
    const jolietRoot = joliet ? parseRecord(joliet, 156, `${name} Joliet descriptor`) : null;
    // Rock Ridge is announced by an SP entry in the root's "." record (SUSP).
    const rootDir = await device.read(root.extent * SECTOR, Math.min(SECTOR, root.size));
    const dot = parseRecord(rootDir, 0, `${name} root directory`);
    let rockRidge = false;
    let suSkip = 0;
    if (dot && dot.systemUse.length >= 7 && dot.systemUse.toString("latin1", 0, 2) === "SP") {
      rockRidge = dot.systemUse[4] === 0xbe && dot.systemUse[5] === 0xef;
      suSkip = dot.systemUse[6];
    }
    const volume: IsoVolume = {
      volumeId: text(primary, 40, 72),
      systemId: text(primary, 8, 40),
      publisher: text(primary, 318, 446),
      application: text(primary, 574, 702),
      created: longDate(primary, 813),
      blocks: primary.readUInt32LE(80),
      joliet: jolietRoot !== null,
      rockRidge,
      elTorito: bootCatalog === null ? [] : await readBootCatalog(device, bootCatalog, name),
    };
    return new IsoImage(device, volume, root, jolietRoot, suSkip, options);
  }

  async #readDir(
    record: RawRecord,
    joliet: boolean,
    path: string,
    walk: Walk,
  ): Promise<IsoEntry[]> {
    if (record.size > MAX_DIRECTORY) {
      throw new IsoFormatError(
        `Directory ${path} claims ${record.size} bytes; the image is corrupt`,
      );
    }
    const offset = record.extent * SECTOR;
    if (offset + record.size > this.device.size) {
      throw new IsoFormatError(`Directory ${path} lies outside the image`);
    }
    const data = await this.device.read(offset, record.size);
    const names: NameStyle = { rockRidge: this.#rockRidge, suSkip: this.#suSkip, joliet };
    return parseDirectory(data, {
      path,
      names,
      walk,
      maxRecords: this.#opts.maxRecordsPerLookup,
    });
  }

  /** Parsed directories held now, and their estimated bytes (for tests and metrics). */
  get cacheStats(): { directories: number; bytes: number } {
    return { directories: this.#dirs.size, bytes: this.#dirs.bytes };
  }

  /**
   * The entries of directory `path` ("/" for the root). Directories are cached by where they
   * lie in the image, so case variants of a path and hard-linked directories share one entry.
   */
  async list(path: string): Promise<IsoEntry[]> {
    const parts = splitPath(path);
    if (parts.length > this.#opts.maxDepth) {
      throw new IsoFormatError(
        `Path ${path} is ${parts.length} directories deep, expected at most ${this.#opts.maxDepth}`,
      );
    }
    const joliet = this.#jolietRoot !== null;
    const root = this.#jolietRoot ?? this.#root;
    const walk: Walk = { records: 0 };
    /** Extents of the directories walked through: one seen twice is a loop. */
    const seen = new Map<number, string>([[root.extent, "/"]]);
    let dir = await this.#directory(root.extent, root.size, joliet, "/", walk);
    for (let i = 0; i < parts.length; i++) {
      const here = `/${parts.slice(0, i + 1).join("/")}`;
      const e = findName(dir, parts[i]);
      if (!e?.directory) throw new IsoFormatError(`No directory ${here} in the ISO`);
      const extent = e.offset / SECTOR;
      const earlier = seen.get(extent);
      if (earlier !== undefined) {
        throw new IsoFormatError(
          `Directory ${here} is ${earlier} again (extent ${extent}): a directory loop; the image is corrupt or hostile`,
        );
      }
      seen.set(extent, here);
      dir = await this.#directory(extent, e.size, joliet, here, walk);
    }
    return dir;
  }

  /** The parsed directory at `extent`, from the cache or read (one read for concurrent asks). */
  async #directory(
    extent: number,
    size: number,
    joliet: boolean,
    path: string,
    walk: Walk,
  ): Promise<IsoEntry[]> {
    const key = `${extent}:${size}`;
    const cached = this.#dirs.get(key);
    if (cached) return cached;
    let p = this.#reading.get(key);
    if (!p) {
      const record: RawRecord = {
        length: 0,
        extent,
        size,
        flags: 2,
        id: Buffer.alloc(0),
        systemUse: Buffer.alloc(0),
      };
      p = this.#readDir(record, joliet, path, walk).then((entries) => {
        let bytes = size;
        for (const e of entries) bytes += ENTRY_OVERHEAD + 2 * e.name.length;
        this.#dirs.set(key, entries, bytes);
        return entries;
      });
      this.#reading.set(key, p);
      void p.then(
        () => this.#reading.delete(key),
        () => this.#reading.delete(key),
      );
    }
    return p;
  }

  /** The entry at `path`, or null. Names match exactly, else case-insensitively. */
  async stat(path: string): Promise<IsoEntry | null> {
    const parts = splitPath(path);
    if (parts.length === 0 || parts.length - 1 > this.#opts.maxDepth) return null;
    let dir: IsoEntry[];
    try {
      dir = await this.list(`/${parts.slice(0, -1).join("/")}`);
    } catch (err) {
      if (isNoDirectory(err)) return null;
      throw err;
    }
    return findName(dir, parts[parts.length - 1]) ?? null;
  }

  async readFile(path: string, maxBytes = 64 * 1024 * 1024): Promise<Buffer> {
    const e = await this.stat(path);
    if (!e || e.directory) throw new IsoFormatError(`No file ${path} in the ISO`);
    if (e.size > maxBytes) throw new IsoFormatError(`${path} is larger than ${maxBytes} bytes`);
    return this.file(e, path).read(0, e.size);
  }

  /** A file's data as a read-only device (its extents, in order). */
  file(entry: IsoEntry, path = entry.name): IsoFileDevice {
    for (const e of entry.extents ?? [entry]) {
      if (e.offset + e.size > this.device.size) {
        throw new IsoFormatError(`${path} lies outside the image (truncated ISO?)`);
      }
    }
    return new IsoFileDevice(this.device, entry);
  }

  /** Every path under `path` (depth-first), for inspection. */
  async walk(path = "/", maxDepth = 4): Promise<string[]> {
    const out: string[] = [];
    const visit = async (dir: string, depth: number): Promise<void> => {
      for (const e of await this.list(dir)) {
        const full = `${dir === "/" ? "" : dir}/${e.name}`;
        out.push(e.directory ? `${full}/` : full);
        if (e.directory && depth < maxDepth) await visit(full, depth + 1);
      }
    };
    await visit(path, 1);
    return out;
  }
}

function splitPath(path: string): string[] {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new IsoFormatError(`Path ${path} may not contain ".."`);
  return parts;
}

function findName(entries: IsoEntry[], name: string): IsoEntry | undefined {
  return (
    entries.find((e) => e.name === name) ??
    entries.find((e) => e.name.toLowerCase() === name.toLowerCase())
  );
}
