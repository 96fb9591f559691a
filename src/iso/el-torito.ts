// The El Torito boot catalog (El Torito specification 1.0, section 2): the validation entry,
// the initial/default entry and the section headers with their entries, one per platform.
import type { BlockDevice } from "../block/block-device.ts";
import { IsoFormatError, SECTOR } from "./iso-entry.ts";

export interface ElToritoEntry {
  platform: "bios" | "uefi" | "ppc" | "mac" | `0x${string}`;
  bootable: boolean;
  /** Byte offset of the boot image in the ISO. */
  offset: number;
  /** Its size as the catalog gives it (sectors × 512; 0 or 1 sector often means "to the end"). */
  size: number;
  emulation: "none" | "1.2M floppy" | "1.44M floppy" | "2.88M floppy" | "hard disk";
}

const PLATFORMS: Record<number, ElToritoEntry["platform"]> = {
  0: "bios",
  1: "ppc",
  2: "mac",
  0xef: "uefi",
};
const EMULATIONS: ElToritoEntry["emulation"][] = [
  "none",
  "1.2M floppy",
  "1.44M floppy",
  "2.88M floppy",
  "hard disk",
];

export async function readBootCatalog(
  device: BlockDevice,
  sector: number,
  name: string,
): Promise<ElToritoEntry[]> {
  if ((sector + 1) * SECTOR > device.size) {
    throw new IsoFormatError(`${name}: the El Torito boot catalog lies outside the image`);
  }
  const c = await device.read(sector * SECTOR, SECTOR);
  // Validation entry: header 1, key bytes 55 AA, words summing to zero.
  let sum = 0;
  for (let i = 0; i < 32; i += 2) sum = (sum + c.readUInt16LE(i)) & 0xffff;
  if (c[0] !== 1 || c[30] !== 0x55 || c[31] !== 0xaa || sum !== 0) {
    throw new IsoFormatError(`${name}: the El Torito boot catalog fails its validation entry`);
  }
  const out: ElToritoEntry[] = [];
  const entry = (at: number, platformId: number): void => {
    const boot = c[at];
    if (boot !== 0x88 && boot !== 0) return;
    out.push({
      platform: PLATFORMS[platformId] ?? `0x${platformId.toString(16)}`,
      bootable: boot === 0x88,
      emulation: EMULATIONS[c[at + 1] & 0x0f] ?? "none",
      size: c.readUInt16LE(at + 6) * 512,
      offset: c.readUInt32LE(at + 8) * SECTOR,
    });
  };
  entry(32, c[1]);
  // Section headers (0x90 more follow, 0x91 last), each followed by its entries.
  for (let at = 64; at + 32 <= SECTOR;) {
    const header = c[at];
    if (header !== 0x90 && header !== 0x91) break;
    const platformId = c[at + 1];
    const count = c.readUInt16LE(at + 2);
    at += 32;
    for (let i = 0; i < count && at + 32 <= SECTOR; i++, at += 32) entry(at, platformId);
    if (header === 0x91) break;
  }
  return out;
}
