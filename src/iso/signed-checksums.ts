// A whole ISO's SHA-256 taken from its publisher's signed checksum list, so nobody has to paste
// a hash by hand: Ubuntu's SHA256SUMS + SHA256SUMS.gpg, Debian's SHA256SUMS + SHA256SUMS.sign
// (detached signatures, GNU `HASH  NAME` lines), Fedora's CHECKSUM (clearsigned, BSD
// `SHA256 (NAME) = HASH` lines). The signature is checked by gpgv against the keyring the
// configuration names (binary or ASCII-armoured); for a clearsigned list only the bytes gpgv
// says were signed are read. A verified list and its signature are kept in the cache so an
// offline start can check them again.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { silentLogger } from "../log.ts";
import type { Logger } from "../log.ts";
import { writeFileAtomic } from "../store/local-store.ts";

/** Where the list is, its detached signature (none: the list is clearsigned), whose keys count. */
export interface ChecksumsSpec {
  /** The checksum list: an http(s) URL or a local path. */
  url: string;
  /** The detached signature of the list (URL or path); omitted for a clearsigned list. */
  signature?: string;
  /** Keyring files (binary OpenPGP or ASCII-armoured public keys) of the publisher. */
  keyring: string[];
  /** The ISO's name in the list; default: the last part of the ISO's URL or path. */
  name?: string;
}

export interface SignedSha256 {
  sha256: string;
  /** The name the hash was listed under. */
  name: string;
  /** Who signed the list (gpgv's GOODSIG user id) and the key's fingerprint. */
  signer: string;
  fingerprint: string;
  /** Whether the list came from its origin now or from the copy kept in the cache. */
  from: "origin" | "cache";
}

export class ChecksumsError extends Error {}

const MAX_LIST_BYTES = 4 << 20;
const FETCH_TIMEOUT_MS = 30_000;
const CLEARSIGNED = "-----BEGIN PGP SIGNED MESSAGE-----";

async function fetchBytes(location: string): Promise<Buffer> {
  if (!/^https?:\/\//i.test(location)) return readFile(location);
  const res = await fetch(location, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  if (bytes.length > MAX_LIST_BYTES) throw new Error(`larger than ${MAX_LIST_BYTES} bytes`);
  return bytes;
}

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

/**
 * The hash listed for `name`: GNU lines (`HASH  NAME`, `HASH *NAME`) and BSD lines
 * (`SHA256 (NAME) = HASH`); a leading "./" is ignored.
 */
export function findSha256(list: string, name: string, listName: string): string {
  const seen: string[] = [];
  const clean = (n: string): string => n.trim().replace(/^\.\//, "");
  for (const line of list.split(/\r?\n/)) {
    const gnu = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    const bsd = /^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$/.exec(line.trim());
    const [hash, listed] = gnu ? [gnu[1], clean(gnu[2])] : bsd ? [bsd[2], clean(bsd[1])] : [];
    if (hash === undefined || listed === undefined) continue;
    if (listed === name) return hash.toLowerCase();
    seen.push(listed);
  }
  throw new ChecksumsError(
    seen.length === 0
      ? `${listName} has no SHA-256 lines ("HASH  NAME" or "SHA256 (NAME) = HASH"): is it the SHA256 list?`
      : `${listName} lists no ${name} (it lists ${seen.slice(0, 8).join(", ")}${seen.length > 8 ? `, … ${seen.length} in all` : ""}); give checksums.name as it appears there`,
  );
}

function gpgv(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolveRun, reject) => {
    execFile("gpgv", args, { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === "ENOENT") {
        reject(
          new ChecksumsError(
            "gpgv is not installed (Debian package gpgv): it checks the checksum list's signature",
          ),
        );
        return;
      }
      resolveRun({ code: err ? Number(err.code) || 1 : 0, stdout, stderr });
    });
  });
}

/**
 * Checks the list's signature with gpgv against `keyring`; returns the signed text (for a
 * clearsigned list, only what the signature covers) and the signer.
 */
export async function verifyList(
  list: Buffer,
  signature: Buffer | null,
  keyring: Buffer,
  listName: string,
): Promise<{ text: string; signer: string; fingerprint: string }> {
  if (!signature && !list.subarray(0, 200).toString("latin1").includes(CLEARSIGNED)) {
    throw new ChecksumsError(
      `${listName} is not clearsigned: give checksums.signature, its detached signature (Ubuntu: SHA256SUMS.gpg, Debian: SHA256SUMS.sign)`,
    );
  }
  const dir = await mkdtemp(join(tmpdir(), "inetboot-gpgv-"));
  try {
    const files = {
      keyring: join(dir, "keyring.gpg"),
      list: join(dir, "list"),
      signature: join(dir, "list.sig"),
      out: join(dir, "signed"),
    };
    await writeFile(files.keyring, keyring);
    await writeFile(files.list, list);
    if (signature) await writeFile(files.signature, signature);
    const r = await gpgv([
      "--homedir",
      dir,
      "--status-fd",
      "1",
      "--keyring",
      files.keyring,
      ...(signature ? [files.signature, files.list] : ["--output", files.out, files.list]),
    ]);
    const good = /^\[GNUPG:\] GOODSIG \S+ (.*)$/m.exec(r.stdout);
    const valid = /^\[GNUPG:\] VALIDSIG (\S+)/m.exec(r.stdout);
    if (r.code !== 0 || !good || !valid) {
      const why = /^\[GNUPG:\] (BADSIG|NO_PUBKEY|EXPKEYSIG|REVKEYSIG|EXPSIG|ERRSIG|NODATA)\b/m.exec(
        r.stdout,
      )?.[1];
      const reason =
        why === "BADSIG"
          ? "the signature does not match the list (the list was changed)"
          : why === "NO_PUBKEY" || why === "ERRSIG"
            ? "it is not signed by a key in the keyring"
            : why === "EXPKEYSIG" || why === "REVKEYSIG" || why === "EXPSIG"
              ? "the signing key or signature has expired or been revoked"
              : why === "NODATA"
                ? "the signature file holds no signature"
                : "gpgv did not accept it";
      const detail = r.stderr
        .split("\n")
        .filter((l) => l.startsWith("gpgv:"))
        .join("; ");
      throw new ChecksumsError(
        `${listName}: signature not accepted: ${reason}${detail ? ` (${detail})` : ""}; refusing to trust its checksums`,
      );
    }
    const text = signature ? list.toString("utf8") : await readFile(files.out, "utf8");
    return { text, signer: good[1], fingerprint: valid[1] };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The SHA-256 of `isoSource` from its signed checksum list. The list and its signature come
 * from their origin (kept in `cacheDir` once verified); offline, or when the origin cannot be
 * reached, the kept copy is checked again and used.
 */
export async function signedSha256(
  spec: ChecksumsSpec,
  isoSource: string,
  options: { cacheDir: string; offline?: boolean; logger?: Logger },
): Promise<SignedSha256> {
  const log = options.logger ?? silentLogger;
  const listName = spec.url;
  const name =
    spec.name ??
    (/^https?:\/\//i.test(isoSource)
      ? decodeURIComponent(basename(new URL(isoSource).pathname))
      : basename(isoSource));
  const keyFiles = await Promise.all(
    spec.keyring.map(async (file) => ({
      name: file,
      bytes: await readFile(resolve(file)).catch((err: Error) => {
        throw new ChecksumsError(`cannot read the keyring ${file}: ${err.message}`);
      }),
    })),
  );
  const keyring = binaryKeyring(keyFiles);
  const kept = join(
    options.cacheDir,
    "checksums",
    createHash("sha256")
      .update(`${spec.url}\n${spec.signature ?? ""}`)
      .digest("hex")
      .slice(0, 32),
  );
  let from: SignedSha256["from"] = "origin";
  let list: Buffer;
  let signature: Buffer | null = null;
  try {
    if (options.offline) throw new Error("offline");
    list = await fetchBytes(spec.url).catch((err: Error) => {
      throw new Error(`${spec.url}: ${err.message}`);
    });
    if (spec.signature) {
      signature = await fetchBytes(spec.signature).catch((err: Error) => {
        throw new Error(`${spec.signature}: ${err.message}`);
      });
    }
  } catch (err) {
    const copy = await readFile(join(kept, "list")).catch(() => null);
    if (!copy) {
      throw new ChecksumsError(
        options.offline
          ? `${spec.url}: offline, and no copy of the checksum list is kept; run once online`
          : `cannot fetch the checksum list: ${(err as Error).message}`,
      );
    }
    list = copy;
    signature = spec.signature ? await readFile(join(kept, "signature")) : null;
    from = "cache";
    if (!options.offline) {
      log.warn(
        { list: spec.url, error: (err as Error).message },
        "checksum list unreachable; using the copy kept in the cache",
      );
    }
  }
  const verified = await verifyList(list, signature, keyring, listName);
  const sha256 = findSha256(verified.text, name, listName);
  if (from === "origin") {
    await mkdir(kept, { recursive: true });
    await writeFileAtomic(join(kept, "list"), list);
    if (signature) await writeFileAtomic(join(kept, "signature"), signature);
  }
  log.info(
    { list: spec.url, name, sha256, signer: verified.signer, key: verified.fingerprint, from },
    "checksum list signature verified",
  );
  return { sha256, name, signer: verified.signer, fingerprint: verified.fingerprint, from };
}
