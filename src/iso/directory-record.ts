// ISO 9660 directory records (ECMA-119 section 9.1) and the names they carry: plain ISO 9660
// ("NAME.EXT;1"), Joliet (UCS-2 big-endian) and Rock Ridge NM entries (RRIP section 4.1.4, in
// the SUSP system use area); a directory's bytes parsed into entries, multi-extent files joined.
import { IsoFormatError, SECTOR } from "./iso-entry.ts";
import type { IsoEntry } from "./iso-entry.ts";

export interface RawRecord {
  length: number;
  extent: number;
  size: number;
  flags: number;
  id: Buffer;
  systemUse: Buffer;
}

export function parseRecord(b: Buffer, at: number, where: string): RawRecord | null {
  const length = b[at];
  if (length === 0) return null;
  if (length < 34 || at + length > b.length) {
    throw new IsoFormatError(`${where}: a directory record at ${at} has length ${length}`);
  }
  const idLength = b[at + 32];
  if (33 + idLength > length) {
    throw new IsoFormatError(`${where}: a directory record name overruns its record`);
  }
  const suStart = at + 33 + idLength + (idLength % 2 === 0 ? 1 : 0);
  return {
    length,
    extent: b.readUInt32LE(at + 2),
    size: b.readUInt32LE(at + 10),
    flags: b[at + 25],
    id: b.subarray(at + 33, at + 33 + idLength),
    systemUse: b.subarray(Math.min(suStart, at + length), at + length),
  };
}

/** How one image's records are named. */
export interface NameStyle {
  /** Rock Ridge NM entries come first when present. */
  rockRidge: boolean;
  /** Bytes skipped at the start of each system use area (SP's LEN_SKP). */
  suSkip: number;
  /** Identifiers are Joliet UCS-2 (from the supplementary descriptor's tree). */
  joliet: boolean;
}

/** The best name of a record: Rock Ridge, else Joliet, else ISO 9660 without ";1". */
export function recordName(r: RawRecord, style: NameStyle): string {
  if (style.rockRidge) {
    const nm = rockRidgeName(r.systemUse.subarray(style.suSkip));
    if (nm !== null) return nm;
  }
  if (style.joliet) {
    const swapped = Buffer.from(r.id);
    swapped.swap16();
    return swapped.toString("utf16le").replace(/;\d+$/, "");
  }
  const plain = r.id.toString("latin1").replace(/;\d+$/, "");
  return r.flags & 2 ? plain : plain.replace(/\.$/, "");
}

/** The NM entries of one system use area (CE continuations are not followed: rare for names). */
function rockRidgeName(su: Buffer): string | null {
  let name: string | null = null;
  for (let at = 0; at + 4 <= su.length;) {
    const sig = su.toString("latin1", at, at + 2);
    const len = su[at + 2];
    if (len < 4 || at + len > su.length) break;
    if (sig === "NM") {
      const flags = su[at + 4];
      if (flags & 2) name = ".";
      else if (flags & 4) name = "..";
      else name = (name ?? "") + su.toString("utf8", at + 5, at + len);
    }
    if (sig === "ST") break;
    at += len;
  }
  return name;
}

/** What one lookup has read so far (records are counted against maxRecordsPerLookup). */
export interface Walk {
  records: number;
}

/**
 * The entries of a directory's bytes (records never cross a sector; the rest of a sector after
 * a zero length byte is padding), without "." and "..". Records count against `maxRecords`.
 */
export function parseDirectory(
  data: Buffer,
  options: { path: string; names: NameStyle; walk: Walk; maxRecords: number },
): IsoEntry[] {
  const { path, names, walk, maxRecords } = options;
  const out: IsoEntry[] = [];
  /** The earlier parts of a multi-extent file (flag 0x80), until its last record. */
  let parts: RawRecord[] = [];
  for (let sector = 0; sector < data.length; sector += SECTOR) {
    for (let at = sector; at < Math.min(sector + SECTOR, data.length);) {
      const r = parseRecord(data, at, `directory ${path}`);
      if (!r) break; // the rest of the sector is padding
      at += r.length;
      if (++walk.records > maxRecords) {
        throw new IsoFormatError(
          `Looking up ${path} reads more than ${maxRecords} directory records; the image is corrupt or hostile`,
        );
      }
      if (r.id.length === 1 && (r.id[0] === 0 || r.id[0] === 1)) continue; // "." and ".."
      if (r.flags & 0x80) {
        parts.push(r);
        continue;
      }
      const all = [...parts, r];
      parts = [];
      const extents = all.map((x) => ({ offset: x.extent * SECTOR, size: x.size }));
      const contiguous = extents.every(
        (e, i) => i === 0 || extents[i - 1].offset + extents[i - 1].size === e.offset,
      );
      out.push({
        name: recordName(r, names),
        directory: (r.flags & 2) !== 0,
        offset: extents[0].offset,
        size: extents.reduce((n, e) => n + e.size, 0),
        ...(contiguous ? {} : { extents }),
      });
    }
  }
  return out;
}
