// The checksum lists distributions put on their ISOs (sha256sum.txt, MD5SUMS...): what a file
// extracted from the ISO is checked against.
import type { IsoImage } from "./iso9660.ts";

export interface Checksum {
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

export async function readChecksums(iso: IsoImage): Promise<Map<string, Checksum>> {
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
