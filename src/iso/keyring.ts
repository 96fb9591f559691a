// The publisher's public keys as the one binary keyring gpgv takes: binary OpenPGP keys kept,
// ASCII-armoured blocks (RFC 4880 section 6.2) decoded.
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { ChecksumsError } from "./checksums-error.ts";

/** Public keys as one binary keyring: armoured blocks are decoded, binary ones kept. */
export function binaryKeyring(files: { name: string; bytes: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  for (const { name, bytes } of files) {
    const text = bytes.toString("latin1");
    if (!text.includes("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
      parts.push(bytes);
      continue;
    }
    const blocks = [
      ...text.matchAll(
        /-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n([\s\S]*?)-----END PGP PUBLIC KEY BLOCK-----/g,
      ),
    ];
    for (const [, body] of blocks) {
      // Armour headers ("Comment: …") end at the first empty line; "=XXXX" is the CRC24.
      const lines = body.split(/\r?\n/);
      const blank = lines.findIndex((l) => l.trim() === "");
      const data = (
        blank >= 0 && lines.slice(0, blank).every((l) => /^[\w-]+: /.test(l))
          ? lines.slice(blank + 1)
          : lines
      ).filter((l) => l.trim() !== "" && !l.startsWith("="));
      parts.push(Buffer.from(data.join(""), "base64"));
    }
    if (blocks.length === 0)
      throw new ChecksumsError(`${name}: an armoured key block is not closed`);
  }
  return Buffer.concat(parts);
}

/** The keyring files as one binary keyring (a clear error for a file that cannot be read). */
export async function readKeyring(files: string[]): Promise<Buffer> {
  return binaryKeyring(
    await Promise.all(
      files.map(async (file) => ({
        name: file,
        bytes: await readFile(resolve(file)).catch((err: Error) => {
          throw new ChecksumsError(`cannot read the keyring ${file}: ${err.message}`);
        }),
      })),
    ),
  );
}
