// A whole ISO's SHA-256 taken from its publisher's signed checksum list, so nobody has to paste
// a hash by hand: Ubuntu's SHA256SUMS + SHA256SUMS.gpg, Debian's SHA256SUMS + SHA256SUMS.sign
// (detached signatures, GNU `HASH  NAME` lines), Fedora's CHECKSUM (clearsigned, BSD
// `SHA256 (NAME) = HASH` lines). The signature is checked by gpgv against the keyring the
// configuration names (binary or ASCII-armoured); for a clearsigned list only the bytes gpgv
// says were signed are read. A verified list and its signature are kept in the cache so an
// offline start can check them again (kept-files.ts). A detached signature over the whole ISO
// (Arch's `.iso.sig`) is iso-signature.ts.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { ChecksumsError } from "./checksums-error.ts";
import { gpgv, gpgvVerdict } from "./gpgv.ts";
import { fetchKept, keptDir } from "./kept-files.ts";
import { readKeyring } from "./keyring.ts";

// (Kept importable from here, where they were first defined.)
export { ChecksumsError } from "./checksums-error.ts";
export { loadIsoSignature, streamVerifier } from "./iso-signature.ts";
export type { IsoSignature, IsoSignatureSpec } from "./iso-signature.ts";
export { binaryKeyring } from "./keyring.ts";

const CLEARSIGNED = "-----BEGIN PGP SIGNED MESSAGE-----";

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
    const verdict = gpgvVerdict(r, {
      what: listName,
      changed: "the list (the list was changed)",
      consequence: "refusing to trust its checksums",
    });
    const text = signature ? list.toString("utf8") : await readFile(files.out, "utf8");
    return { text, ...verdict };
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
  const keyring = await readKeyring(spec.keyring);
  const got = await fetchKept(
    { list: spec.url, ...(spec.signature ? { signature: spec.signature } : {}) },
    keptDir(options.cacheDir, spec.url, spec.signature),
    { offline: options.offline, logger: log, what: "checksum list" },
  );
  const verified = await verifyList(got.bytes.list, got.bytes.signature ?? null, keyring, listName);
  const sha256 = findSha256(verified.text, name, listName);
  await got.keep();
  log.info(
    {
      list: spec.url,
      name,
      sha256,
      signer: verified.signer,
      key: verified.fingerprint,
      from: got.from,
    },
    "checksum list signature verified",
  );
  return {
    sha256,
    name,
    signer: verified.signer,
    fingerprint: verified.fingerprint,
    from: got.from,
  };
}
