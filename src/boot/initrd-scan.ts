// What an initrd holds, read without unpacking it to disk: the names in its cpio archives — an
// uncompressed early archive (CPU microcode) followed by the main one compressed with gzip or
// zstd (Node's zlib, off the event loop) or xz, lz4, bzip2, lzma (their tools) — enough to tell
// whether it can mount an NBD root (an nbd-client of its own: Debian's nbd-client hook,
// dracut's nbd module) and which initramfs builder made it. An initrd may come from a hostile
// image: its size, names, entries and unpacked bytes are bounded, and so is the time.
import { spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";

/** Unpacked bytes looked through at most (Debian's initrds unpack to ~150 MiB). */
export const MAX_UNPACKED = 2 * 1024 * 1024 * 1024;
/** Archive entries looked through at most. */
export const MAX_ENTRIES = 200_000;
/** How long a scan may take. */
export const SCAN_MS = 120_000;

export interface InitrdFacts {
  /** How each archive in it is stored ("cpio", "gzip", "zstd", …). */
  archives: string[];
  entries: number;
  /** Who built it, when it says. */
  builder: "initramfs-tools" | "dracut" | "unknown";
  /** The nbd-client it has, if any ("usr/sbin/nbd-client"). */
  nbdClient?: string;
}

const TOOLS: [string, Buffer, string[]][] = [
  ["xz", Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), ["xz", "-dc"]],
  ["lzma", Buffer.from([0x5d, 0x00, 0x00]), ["xz", "--format=lzma", "-dc"]],
  ["lz4", Buffer.from([0x02, 0x21, 0x4c, 0x18]), ["lz4", "-dc"]],
  ["bzip2", Buffer.from("BZh"), ["bzip2", "-dc"]],
];

/** Reads cpio "newc" headers from a stream of chunks, skipping file data. */
class CpioNames {
  #pending = Buffer.alloc(0);
  #skip = 0;
  entries = 0;
  done = false;
  readonly names: string[] = [];
  readonly #onName: (name: string) => void;
  readonly #maxEntries: number;
  constructor(onName: (name: string) => void, maxEntries: number) {
    this.#onName = onName;
    this.#maxEntries = maxEntries;
  }

  /** Takes a chunk; returns the bytes after the trailer when this archive ended in it. */
  push(chunk: Buffer): Buffer | null {
    let buf = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    for (;;) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, buf.length);
        this.#skip -= n;
        buf = buf.subarray(n);
        if (this.#skip > 0) break;
      }
      if (buf.length < 110) break;
      const magic = buf.toString("latin1", 0, 6);
      if (magic !== "070701" && magic !== "070702") {
        throw new Error(`not a cpio newc archive (magic ${JSON.stringify(magic)})`);
      }
      const field = (i: number): number => {
        const text = buf.toString("latin1", 6 + i * 8, 14 + i * 8);
        if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new Error("a cpio header field is not hex");
        return parseInt(text, 16);
      };
      const fileSize = field(6);
      const nameSize = field(11);
      if (nameSize === 0 || nameSize > 4096) throw new Error(`a cpio name of ${nameSize} bytes`);
      const nameEnd = 110 + nameSize;
      const dataAt = nameEnd + ((4 - (nameEnd % 4)) % 4);
      if (buf.length < dataAt) break;
      const name = buf.toString("utf8", 110, nameEnd - 1);
      if (++this.entries > this.#maxEntries)
        throw new Error(`over ${this.#maxEntries} archive entries`);
      buf = buf.subarray(dataAt);
      if (name === "TRAILER!!!") {
        this.done = true;
        this.#pending = Buffer.alloc(0);
        return buf;
      }
      this.#onName(name);
      this.#skip = fileSize + ((4 - (fileSize % 4)) % 4);
    }
    this.#pending = Buffer.from(buf);
    return null;
  }
}

/** The decompressed stream of `path` from `offset`, by its magic bytes. */
function unpack(
  path: string,
  offset: number,
  head: Buffer,
): { kind: string; out: Readable; stop(): void } {
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  const zstd = head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528;
  const tool = TOOLS.find(([, magic]) => head.subarray(0, magic.length).equals(magic));
  if (!gzip && !zstd && !tool)
    throw new Error(
      `an archive at byte ${offset} is in a format this scan does not know (${head.subarray(0, 4).toString("hex")})`,
    );
  const input = createReadStream(path, { start: offset, highWaterMark: 1 << 20 });
  if (gzip || zstd) {
    const z = gzip ? createGunzip() : createZstdDecompress();
    input.pipe(z);
    return { kind: gzip ? "gzip" : "zstd", out: z, stop: () => (input.destroy(), z.destroy()) };
  }
  const [kind, , command] = tool!;
  const child = spawn(command[0], command.slice(1), { stdio: ["pipe", "pipe", "ignore"] });
  // A missing tool ends the output with the reason, not with "no cpio archive".
  child.on("error", (err: NodeJS.ErrnoException) =>
    child.stdout.destroy(
      err.code === "ENOENT"
        ? new Error(`${command[0]} is not installed (it reads ${kind} initrds)`)
        : err,
    ),
  );
  input.pipe(child.stdin).on("error", () => undefined);
  return {
    kind,
    out: child.stdout,
    stop: () => (input.destroy(), child.kill("SIGKILL")),
  };
}

export interface ScanLimits {
  maxUnpacked?: number;
  maxEntries?: number;
  timeoutMs?: number;
}

/** Looks through the initrd at `path`. */
export async function scanInitrd(path: string, limits: ScanLimits = {}): Promise<InitrdFacts> {
  const maxUnpacked = limits.maxUnpacked ?? MAX_UNPACKED;
  const maxEntries = limits.maxEntries ?? MAX_ENTRIES;
  const timeoutMs = limits.timeoutMs ?? SCAN_MS;
  const facts: InitrdFacts = { archives: [], entries: 0, builder: "unknown" };
  const onName = (name: string): void => {
    const n = name.replace(/^\.?\//, "");
    if (/^(usr\/)?s?bin\/nbd-client$/.test(n)) facts.nbdClient = n;
    if (n === "scripts/local" || n === "conf/initramfs.conf") facts.builder = "initramfs-tools";
    if (/^(usr\/)?lib\/dracut(\/|$)/.test(n)) facts.builder = "dracut";
  };
  const deadline = Date.now() + timeoutMs;
  const file = await open(path, "r");
  try {
    const size = (await file.stat()).size;
    let offset = 0;
    while (offset < size) {
      if (Date.now() > deadline) throw new Error(`scanning took over ${timeoutMs / 1000} s`);
      const head = Buffer.alloc(Math.min(512, size - offset));
      await file.read(head, 0, head.length, offset);
      const zeros = head.findIndex((b) => b !== 0);
      if (zeros < 0) {
        offset += head.length;
        continue;
      }
      offset += zeros - (zeros % 4);
      if (zeros >= 4) continue;
      if (head.toString("latin1", 0, 5) === "07070") {
        // An uncompressed archive (early microcode): its headers, read piece by piece.
        const names = new CpioNames(onName, maxEntries);
        facts.archives.push("cpio");
        let rest: Buffer | null = null;
        let at = offset;
        while (!rest && at < size) {
          if (Date.now() > deadline) throw new Error(`scanning took over ${timeoutMs / 1000} s`);
          const piece = Buffer.alloc(Math.min(1 << 20, size - at));
          await file.read(piece, 0, piece.length, at);
          at += piece.length;
          rest = names.push(piece);
        }
        facts.entries += names.entries;
        if (!rest) break;
        offset = at - rest.length;
        continue;
      }
      const unpacked = unpack(path, offset, head);
      facts.archives.push(unpacked.kind);
      const names = new CpioNames(onName, maxEntries);
      let bytes = 0;
      // A decompressor that stalls is stopped at the deadline too.
      const timer = setTimeout(() => unpacked.stop(), Math.max(0, deadline - Date.now()));
      try {
        for await (const chunk of unpacked.out) {
          bytes += (chunk as Buffer).length;
          if (bytes > maxUnpacked) throw new Error(`it unpacks to over ${maxUnpacked} bytes`);
          if (Date.now() > deadline) throw new Error(`scanning took over ${timeoutMs / 1000} s`);
          if (names.push(chunk as Buffer)) break;
        }
      } finally {
        clearTimeout(timer);
        unpacked.stop();
      }
      if (Date.now() > deadline) throw new Error(`scanning took over ${timeoutMs / 1000} s`);
      facts.entries += names.entries;
      if (!names.done && names.entries === 0) {
        throw new Error(`its ${unpacked.kind} archive holds no cpio archive`);
      }
      // A compressed archive is the last one the kernel needs; what follows is rare.
      break;
    }
  } finally {
    await file.close();
  }
  return facts;
}
