// A read-only ext4 reader over a BlockDevice region (a partition of a streamed image): the
// superblock, group descriptors (32- and 64-bit), inodes, extent trees (any depth), linear and
// hashed directories (read as linear blocks), fast and slow symlinks, path lookup. Enough to
// find a distribution's kernel and initrd in /boot without mounting or downloading the image.
// The filesystem comes from the network: every count, depth, size and symlink chain is bounded,
// and what contradicts itself is an Ext4Error.
import type { BlockDevice } from "../block/block-device.ts";

export class Ext4Error extends Error {
  readonly code = "ERR_EXT4";
}

/** Longest file read whole (kernels and initrds are tens of MB). */
export const MAX_FILE = 512 * 1024 * 1024;
/** Directory size read at most, extent tree depth, symlinks followed in one lookup. */
const MAX_DIR = 64 * 1024 * 1024;
const MAX_DEPTH = 5;
const MAX_LINKS = 40;

const EXTENTS_FL = 0x80000;
const INLINE_DATA_FL = 0x10000000;
const S_IFMT = 0xf000;
export const S_IFDIR = 0x4000;
export const S_IFREG = 0x8000;
export const S_IFLNK = 0xa000;

export interface Ext4Info {
  label: string;
  uuid: string;
  blockSize: number;
  blocks: number;
}

export interface Inode {
  number: number;
  mode: number;
  size: number;
  flags: number;
  /** i_block: the extent tree root, block map, or a fast symlink's target. */
  block: Buffer;
}

interface Extent {
  /** First file block, count, first disk block. */
  logical: number;
  length: number;
  physical: number;
}

const uuidText = (b: Buffer): string =>
  b.toString("hex").replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");

export class Ext4 {
  readonly info: Ext4Info;
  readonly #dev: BlockDevice;
  readonly #base: number;
  readonly #length: number;
  readonly #inodesPerGroup: number;
  readonly #inodeSize: number;
  readonly #descSize: number;
  readonly #descAt: number;
  readonly #groups: number;

  private constructor(dev: BlockDevice, base: number, length: number, sb: Buffer) {
    this.#dev = dev;
    this.#base = base;
    this.#length = length;
    const logSize = sb.readUInt32LE(24);
    if (logSize > 6) throw new Ext4Error(`block size 2^${10 + logSize} is not ext4's`);
    const blockSize = 1024 << logSize;
    const incompat = sb.readUInt32LE(96);
    const is64 = (incompat & 0x80) !== 0;
    const blocks = sb.readUInt32LE(4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
    const blocksPerGroup = sb.readUInt32LE(32);
    this.#inodesPerGroup = sb.readUInt32LE(40);
    this.#inodeSize = sb.readUInt32LE(76) >= 1 ? sb.readUInt16LE(88) : 128;
    this.#descSize = is64 ? sb.readUInt16LE(0xfe) : 32;
    if (blocksPerGroup === 0 || this.#inodesPerGroup === 0) throw new Ext4Error("empty groups");
    if (this.#inodeSize < 128 || this.#inodeSize > blockSize) throw new Ext4Error("inode size");
    if (this.#descSize < 32 || this.#descSize > 1024) throw new Ext4Error("descriptor size");
    this.#groups = Math.ceil(blocks / blocksPerGroup);
    this.#descAt = (sb.readUInt32LE(20) + 1) * blockSize;
    this.info = {
      label: sb
        .subarray(120, 136)
        .toString("latin1")
        .replace(/\0[\s\S]*$/, ""),
      uuid: uuidText(sb.subarray(104, 120)),
      blockSize,
      blocks,
    };
    if (blocks * blockSize > length + blockSize) {
      throw new Ext4Error(`${blocks} blocks do not fit in the partition (${length} bytes)`);
    }
  }

  /** The ext2/3/4 filesystem at [offset, offset+length) of `dev`, or null when there is none. */
  static async open(
    dev: BlockDevice,
    offset = 0,
    length = dev.size - offset,
  ): Promise<Ext4 | null> {
    if (length < 2048) return null;
    const sb = await dev.read(offset + 1024, 1024);
    if (sb.readUInt16LE(56) !== 0xef53) return null;
    return new Ext4(dev, offset, length, sb);
  }

  async #read(byte: number, length: number): Promise<Buffer> {
    if (byte < 0 || length < 0 || byte + length > this.#length) {
      throw new Ext4Error(`a read at ${byte} (+${length}) is outside the filesystem`);
    }
    return this.#dev.read(this.#base + byte, length);
  }

  async inode(number: number): Promise<Inode> {
    const group = Math.floor((number - 1) / this.#inodesPerGroup);
    if (number < 1 || group >= this.#groups) throw new Ext4Error(`inode ${number} does not exist`);
    const desc = await this.#read(this.#descAt + group * this.#descSize, this.#descSize);
    const table =
      desc.readUInt32LE(8) + (this.#descSize >= 64 ? desc.readUInt32LE(0x28) * 2 ** 32 : 0);
    const index = (number - 1) % this.#inodesPerGroup;
    const raw = await this.#read(table * this.info.blockSize + index * this.#inodeSize, 128);
    return {
      number,
      mode: raw.readUInt16LE(0),
      size: raw.readUInt32LE(4) + raw.readUInt32LE(108) * 2 ** 32,
      flags: raw.readUInt32LE(32),
      block: raw.subarray(40, 100),
    };
  }

  /** The extents of an inode, sorted by file block (the tree walked to any depth ≤ 5). */
  async #extents(node: Buffer, depth = 0, out: Extent[] = []): Promise<Extent[]> {
    if (node.readUInt16LE(0) !== 0xf30a) throw new Ext4Error("bad extent header");
    const entries = node.readUInt16LE(2);
    const level = node.readUInt16LE(6);
    if (depth > MAX_DEPTH || level > MAX_DEPTH) throw new Ext4Error("extent tree too deep");
    if (12 + entries * 12 > node.length) throw new Ext4Error("extent entries overflow the node");
    for (let i = 0; i < entries; i++) {
      const e = node.subarray(12 + i * 12, 24 + i * 12);
      if (level === 0) {
        const len = e.readUInt16LE(4);
        out.push({
          logical: e.readUInt32LE(0),
          // Over 32768: an unwritten (preallocated) extent, which reads as zeros.
          length: len > 32768 ? len - 32768 : len,
          physical: len > 32768 ? -1 : e.readUInt16LE(6) * 2 ** 32 + e.readUInt32LE(8),
        });
        if (out.length > 1_000_000) throw new Ext4Error("too many extents");
      } else {
        const child = e.readUInt32LE(4) + e.readUInt16LE(8) * 2 ** 32;
        await this.#extents(
          await this.#read(child * this.info.blockSize, this.info.blockSize),
          depth + 1,
          out,
        );
      }
    }
    return out;
  }

  /** An inode's whole content (at most `max` bytes, else an error). */
  async read(inode: Inode, max = MAX_FILE): Promise<Buffer> {
    if (inode.size > max)
      throw new Ext4Error(`inode ${inode.number} is ${inode.size} bytes (over ${max})`);
    if (inode.flags & INLINE_DATA_FL)
      return Buffer.from(inode.block.subarray(0, Math.min(inode.size, 60)));
    if (!(inode.flags & EXTENTS_FL)) {
      throw new Ext4Error(
        `inode ${inode.number} uses ext2/3 block maps, which this reader does not follow`,
      );
    }
    const out = Buffer.alloc(inode.size);
    const bs = this.info.blockSize;
    for (const x of await this.#extents(inode.block)) {
      const from = x.logical * bs;
      if (x.physical < 0 || from >= out.length) continue;
      const length = Math.min(x.length * bs, out.length - from);
      (await this.#read(x.physical * bs, length)).copy(out, from);
    }
    return out;
  }

  /** A directory's entries by name. */
  async list(dir: Inode): Promise<Map<string, number>> {
    if ((dir.mode & S_IFMT) !== S_IFDIR)
      throw new Ext4Error(`inode ${dir.number} is not a directory`);
    const data = await this.read(dir, MAX_DIR);
    const names = new Map<string, number>();
    // Hashed directories' index blocks read as one empty entry spanning the block.
    for (let at = 0; at + 8 <= data.length;) {
      const inode = data.readUInt32LE(at);
      const recLen = data.readUInt16LE(at + 4);
      const nameLen = data[at + 6];
      if (recLen < 8 || at + recLen > data.length) throw new Ext4Error("bad directory entry");
      if (inode !== 0 && nameLen > 0)
        names.set(data.toString("utf8", at + 8, at + 8 + nameLen), inode);
      at += recLen;
    }
    return names;
  }

  /** A symlink's target. */
  async readlink(link: Inode): Promise<string> {
    if (link.size < 60 && !(link.flags & EXTENTS_FL))
      return link.block.toString("utf8", 0, link.size);
    return (await this.read(link, 4096)).toString("utf8");
  }

  /** The inode at `path` (absolute), following symlinks as the kernel would (at most 40). */
  async lookup(path: string, follow = true): Promise<Inode | null> {
    const root = await this.inode(2);
    let links = 0;
    // `stack`: the inodes from / to the current folder (".." pops).
    const walk = async (stack: Inode[], parts: string[]): Promise<Inode | null> => {
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i];
        if (part === "" || part === ".") continue;
        if (part === "..") {
          if (stack.length > 1) stack = stack.slice(0, -1);
          continue;
        }
        const number = (await this.list(stack[stack.length - 1])).get(part);
        if (number === undefined) return null;
        const node = await this.inode(number);
        if ((node.mode & S_IFMT) === S_IFLNK && (follow || i < parts.length - 1)) {
          if (++links > MAX_LINKS) throw new Ext4Error(`too many symlinks in ${path}`);
          const target = await this.readlink(node);
          const rest = [...target.split("/"), ...parts.slice(i + 1)];
          return walk(target.startsWith("/") ? [root] : stack, rest);
        }
        stack = [...stack, node];
      }
      return stack[stack.length - 1];
    };
    return walk([root], path.split("/"));
  }

  /** What kind of file an inode is. */
  static kind(inode: Inode): "dir" | "file" | "symlink" | "other" {
    const t = inode.mode & S_IFMT;
    return t === S_IFDIR ? "dir" : t === S_IFREG ? "file" : t === S_IFLNK ? "symlink" : "other";
  }
}
