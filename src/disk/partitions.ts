// A disk image's partition table, read over any BlockDevice (a file, a streamed and verified
// image): GPT (UEFI 2.x: the header at LBA 1 and its entries, both CRC-checked, the backup
// header at the end when the primary is damaged) or MBR (four primary entries and the logical
// ones of an extended partition's chain). The image may come from anywhere: every count, size
// and chain is bounded, and a table that contradicts itself is a PartitionTableError.
import { crc32 } from "node:zlib";
import type { BlockDevice } from "../block/block-device.ts";

export const SECTOR = 512;
/** GPT entries read at most (the UEFI minimum is 128; some tools write more). */
export const MAX_GPT_ENTRIES = 1024;
/** Logical partitions followed in an MBR extended chain. */
export const MAX_LOGICAL = 64;

export class PartitionTableError extends Error {
  readonly code = "ERR_PARTITION_TABLE";
}

export interface Partition {
  /** 1-based, as Linux numbers them (sda1; logical MBR partitions from 5). */
  number: number;
  /** Byte offset and length in the image. */
  offset: number;
  size: number;
  /** GPT type GUID or MBR type byte ("0x83"). */
  type: string;
  /** What the type is ("Linux filesystem", "EFI System"), when known. */
  typeName?: string;
  /** The kernel's PARTUUID= (GPT: the partition's GUID; MBR: SIGNATURE-NN). */
  partUuid: string;
  /** GPT partition name. */
  name?: string;
  /** MBR active flag; GPT legacy BIOS bootable attribute. */
  bootable: boolean;
}

export interface PartitionTable {
  scheme: "gpt" | "mbr" | "none";
  /** GPT disk GUID or MBR disk signature (hex). */
  diskId?: string;
  partitions: Partition[];
  /** What was wrong and worked around (a damaged primary GPT read from its backup). */
  warnings: string[];
}

const GPT_TYPES: Record<string, string> = {
  "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
  "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
  "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
  "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
  "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM-64)",
  "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
  "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
  "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
  "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
  "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
  "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
};

const MBR_TYPES: Record<number, string> = {
  0x07: "NTFS/exFAT",
  0x0b: "FAT32",
  0x0c: "FAT32 (LBA)",
  0x0e: "FAT16 (LBA)",
  0x82: "Linux swap",
  0x83: "Linux",
  0x8e: "Linux LVM",
  0xef: "EFI System",
  0xfd: "Linux RAID",
};
const EXTENDED = new Set([0x05, 0x0f, 0x85]);

/** A GUID in its mixed-endian on-disk form as the usual text. */
function guid(b: Buffer): string {
  const h = (x: Buffer): string => x.toString("hex");
  const le = (x: Buffer): string => h(Buffer.from(x).reverse());
  return [le(b.subarray(0, 4)), le(b.subarray(4, 6)), le(b.subarray(6, 8)), h(b.subarray(8, 10)), h(b.subarray(10, 16))].join("-"); // prettier-ignore
}

async function readAt(dev: BlockDevice, offset: number, length: number): Promise<Buffer> {
  if (offset < 0 || offset + length > dev.size) {
    throw new PartitionTableError(
      `the table points past the end of the image (${offset + length} > ${dev.size} bytes)`,
    );
  }
  return dev.read(offset, length);
}

/** The partition table of `dev`; "none" when it has neither GPT nor MBR. */
export async function readPartitions(dev: BlockDevice): Promise<PartitionTable> {
  if (dev.size < 2 * SECTOR) return { scheme: "none", partitions: [], warnings: [] };
  const mbr = await dev.read(0, SECTOR);
  const signed = mbr.readUInt16LE(510) === 0xaa55;
  const protective = signed && [0, 1, 2, 3].some((i) => mbr[446 + i * 16 + 4] === 0xee);
  if (protective || (await dev.read(SECTOR, 8)).toString("latin1") === "EFI PART") {
    return readGpt(dev);
  }
  if (!signed) return { scheme: "none", partitions: [], warnings: [] };
  return readMbr(dev, mbr);
}

interface GptHeader {
  entriesAt: number;
  count: number;
  entrySize: number;
  entriesCrc: number;
  diskId: string;
}

/** The GPT header at `lba`, checked (signature, size, CRC, bounds), or why it is not one. */
async function gptHeader(dev: BlockDevice, lba: number): Promise<GptHeader | string> {
  const h = await readAt(dev, lba * SECTOR, SECTOR);
  if (h.toString("latin1", 0, 8) !== "EFI PART") return "no GPT signature";
  const size = h.readUInt32LE(12);
  if (size < 92 || size > SECTOR) return `header size ${size}`;
  const copy = Buffer.from(h.subarray(0, size));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== h.readUInt32LE(16)) return "header CRC mismatch";
  const count = h.readUInt32LE(80);
  const entrySize = h.readUInt32LE(84);
  if (count > MAX_GPT_ENTRIES) return `${count} entries (more than ${MAX_GPT_ENTRIES})`;
  if (entrySize < 128 || entrySize > 1024 || entrySize % 8 !== 0) return `entry size ${entrySize}`;
  const entriesAt = Number(h.readBigUInt64LE(72)) * SECTOR;
  if (!Number.isSafeInteger(entriesAt) || entriesAt + count * entrySize > dev.size)
    return "entries past the end of the image";
  return {
    entriesAt,
    count,
    entrySize,
    entriesCrc: h.readUInt32LE(88),
    diskId: guid(h.subarray(56, 72)),
  };
}

async function readGpt(dev: BlockDevice): Promise<PartitionTable> {
  const warnings: string[] = [];
  const lastLba = Math.floor(dev.size / SECTOR) - 1;
  let header = await gptHeader(dev, 1);
  let entries: Buffer | null = null;
  if (typeof header !== "string") {
    entries = await dev.read(header.entriesAt, header.count * header.entrySize);
    if (crc32(entries) !== header.entriesCrc) header = "entries CRC mismatch";
  }
  if (typeof header === "string") {
    // The primary is damaged: the backup at the last sector, as firmware and gdisk do.
    const backup = await gptHeader(dev, lastLba);
    if (typeof backup === "string") {
      throw new PartitionTableError(`GPT: primary header: ${header}; backup header: ${backup}`);
    }
    entries = await dev.read(backup.entriesAt, backup.count * backup.entrySize);
    if (crc32(entries) !== backup.entriesCrc) {
      throw new PartitionTableError(`GPT: primary header: ${header}; backup: entries CRC mismatch`);
    }
    warnings.push(`the primary GPT is damaged (${header}); read the backup at the end`);
    header = backup;
  }
  const partitions: Partition[] = [];
  for (let i = 0; i < header.count; i++) {
    const e = (entries as Buffer).subarray(i * header.entrySize, (i + 1) * header.entrySize);
    const type = guid(e.subarray(0, 16));
    if (type === "00000000-0000-0000-0000-000000000000") continue;
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    if (last < first || last > lastLba) {
      throw new PartitionTableError(
        `GPT entry ${i + 1}: sectors ${first}–${last} are not on the disk`,
      );
    }
    const name = e
      .subarray(56, 128)
      .toString("utf16le")
      .replace(/\0[\s\S]*$/, "");
    partitions.push({
      number: i + 1,
      offset: first * SECTOR,
      size: (last - first + 1) * SECTOR,
      type,
      typeName: GPT_TYPES[type],
      partUuid: guid(e.subarray(16, 32)),
      ...(name ? { name } : {}),
      bootable: (e.readBigUInt64LE(48) & 4n) !== 0n,
    });
  }
  return { scheme: "gpt", diskId: header.diskId, partitions, warnings };
}

async function readMbr(dev: BlockDevice, mbr: Buffer): Promise<PartitionTable> {
  const signature = mbr.readUInt32LE(440).toString(16).padStart(8, "0");
  const partitions: Partition[] = [];
  const entry = (table: Buffer, i: number, base: number, number: number): Partition | null => {
    const e = table.subarray(446 + i * 16, 462 + i * 16);
    const type = e[4];
    const start = e.readUInt32LE(8);
    const count = e.readUInt32LE(12);
    if (type === 0 || count === 0) return null;
    return {
      number,
      offset: (base + start) * SECTOR,
      size: count * SECTOR,
      type: `0x${type.toString(16).padStart(2, "0")}`,
      typeName: MBR_TYPES[type] ?? (EXTENDED.has(type) ? "Extended" : undefined),
      partUuid: `${signature}-${number.toString(16).padStart(2, "0")}`,
      bootable: e[0] === 0x80,
    };
  };
  let extended: Partition | null = null;
  for (let i = 0; i < 4; i++) {
    const p = entry(mbr, i, 0, i + 1);
    if (!p) continue;
    partitions.push(p);
    if (EXTENDED.has(Number(p.type))) extended = p;
  }
  if (extended) {
    // Each EBR: a logical partition (relative to the EBR) and a link (relative to the extended).
    const base = extended.offset / SECTOR;
    const seen = new Set<number>();
    let ebr = base;
    for (let n = 5; ; n++) {
      if (n - 5 >= MAX_LOGICAL)
        throw new PartitionTableError(`more than ${MAX_LOGICAL} logical partitions`);
      if (seen.has(ebr)) throw new PartitionTableError("the extended partition's chain loops");
      seen.add(ebr);
      const table = await readAt(dev, ebr * SECTOR, SECTOR);
      if (table.readUInt16LE(510) !== 0xaa55) break;
      const logical = entry(table, 0, ebr, n);
      if (logical) partitions.push(logical);
      const next = table.subarray(462, 478);
      if (next[4] === 0 || next.readUInt32LE(8) === 0) break;
      ebr = base + next.readUInt32LE(8);
    }
  }
  for (const p of partitions) {
    if (p.offset + p.size > dev.size) {
      throw new PartitionTableError(`partition ${p.number} ends past the end of the image`);
    }
  }
  return { scheme: "mbr", diskId: signature, partitions, warnings: [] };
}
