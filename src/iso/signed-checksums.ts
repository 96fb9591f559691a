// A whole ISO's SHA-256 taken from its publisher's signed checksum list, so nobody has to paste
// a hash by hand: Ubuntu's SHA256SUMS + SHA256SUMS.gpg, Debian's SHA256SUMS + SHA256SUMS.sign
// (detached signatures, GNU `HASH  NAME` lines), Fedora's CHECKSUM (clearsigned, BSD
// `SHA256 (NAME) = HASH` lines). The signature is checked by gpgv against the keyring the
// configuration names (binary or ASCII-armoured); for a clearsigned list only the bytes gpgv
// says were signed are read. A verified list and its signature are kept in the cache so an
// offline start can check them again. Also a detached signature over the whole ISO (Arch's
// `.iso.sig`), fed to gpgv as the ISO streams by (streamVerifier).
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { writeFileAtomic } from "../lib/atomic-file.ts";

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
/** Bytes fed to gpgv that may wait in its pipe's buffer (streamVerifier). */
const IN_FLIGHT = 16 << 20;

async function fetchBytes(location: string): Promise<Buffer> {
  if (!/^https?:\/\//i.test(location)) return readFile(location);
  const res = await fetch(location, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`);
  // Lists and signatures are small: a larger body is refused as it comes, never held whole.
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of res.body ?? []) {
    size += (part as Uint8Array).length;
    if (size > MAX_LIST_BYTES) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`larger than ${MAX_LIST_BYTES} bytes: not a checksum list or signature`);
    }
    parts.push(Buffer.from(part as Uint8Array));
  }
  return Buffer.concat(parts);
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

interface GpgvRun {
  code: number;
  stdout: string;
  stderr: string;
}

function gpgvMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === "ENOENT";
}

const GPGV_MISSING =
  "gpgv is not installed (Debian package gpgv): it checks the publisher's signature";

function gpgv(args: string[]): Promise<GpgvRun> {
  return new Promise((resolveRun, reject) => {
    execFile("gpgv", args, { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (gpgvMissing(err)) {
        reject(new ChecksumsError(GPGV_MISSING));
        return;
      }
      resolveRun({ code: err ? Number(err.code) || 1 : 0, stdout, stderr });
    });
  });
}

/** The signer of a run gpgv accepted; otherwise a ChecksumsError saying why, about `what`. */
function gpgvVerdict(
  r: GpgvRun,
  what: string,
  changed: string,
  consequence: string,
): { signer: string; fingerprint: string } {
  const good = /^\[GNUPG:\] GOODSIG \S+ (.*)$/m.exec(r.stdout);
  const valid = /^\[GNUPG:\] VALIDSIG (\S+)/m.exec(r.stdout);
  if (r.code === 0 && good && valid) return { signer: good[1], fingerprint: valid[1] };
  const why = /^\[GNUPG:\] (BADSIG|NO_PUBKEY|EXPKEYSIG|REVKEYSIG|EXPSIG|ERRSIG|NODATA)\b/m.exec(
    r.stdout,
  )?.[1];
  const reason =
    why === "BADSIG"
      ? `the signature does not match ${changed}`
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
    `${what}: signature not accepted: ${reason}${detail ? ` (${detail})` : ""}; ${consequence}`,
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
    const verdict = gpgvVerdict(
      r,
      listName,
      "the list (the list was changed)",
      "refusing to trust its checksums",
    );
    const text = signature ? list.toString("utf8") : await readFile(files.out, "utf8");
    return { text, ...verdict };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The keyring files as one binary keyring (a clear error for a file that cannot be read). */
async function readKeyring(files: string[]): Promise<Buffer> {
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

/**
 * Small signed files (a list, signatures) from their origin, or — offline, or when the origin
 * cannot be reached — the copies kept under `kept` by `keep` after they were verified.
 */
async function fetchKept(
  parts: Record<string, string>,
  kept: string,
  options: { offline?: boolean; logger?: Logger; what: string },
): Promise<{ bytes: Record<string, Buffer>; from: "origin" | "cache"; keep: () => Promise<void> }> {
  const bytes: Record<string, Buffer> = {};
  try {
    if (options.offline) throw new Error("offline");
    for (const [name, location] of Object.entries(parts)) {
      bytes[name] = await fetchBytes(location).catch((err: Error) => {
        throw new Error(`${location}: ${err.message}`);
      });
    }
  } catch (err) {
    for (const name of Object.keys(parts)) {
      const copy = await readFile(join(kept, name)).catch(() => null);
      if (!copy) {
        throw new ChecksumsError(
          options.offline
            ? `${Object.values(parts)[0]}: offline, and no copy of the ${options.what} is kept; run once online`
            : `cannot fetch the ${options.what}: ${(err as Error).message}`,
        );
      }
      bytes[name] = copy;
    }
    if (!options.offline) {
      options.logger?.warn(
        { from: Object.values(parts), error: (err as Error).message },
        `${options.what} unreachable; using the copy kept in the cache`,
      );
    }
    return { bytes, from: "cache", keep: () => Promise.resolve() };
  }
  const keep = async (): Promise<void> => {
    await mkdir(kept, { recursive: true });
    for (const [name, b] of Object.entries(bytes)) await writeFileAtomic(join(kept, name), b);
  };
  return { bytes, from: "origin", keep };
}

function keptDir(cacheDir: string, ...locations: (string | undefined)[]): string {
  const key = createHash("sha256").update(locations.map((l) => l ?? "").join("\n"));
  return join(cacheDir, "checksums", key.digest("hex").slice(0, 32));
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

/** A detached OpenPGP signature over the whole ISO (Arch Linux's `.iso.sig`). */
export interface IsoSignatureSpec {
  url: string;
  keyring: string[];
}

/** The ISO's signature and keyring, ready to check the ISO as it is read. */
export interface IsoSignature {
  signature: Buffer;
  keyring: Buffer;
  /** What a whole-ISO check remembers: the signature's SHA-256. */
  digest: string;
  url: string;
}

export async function loadIsoSignature(
  spec: IsoSignatureSpec,
  options: { cacheDir: string; offline?: boolean; logger?: Logger },
): Promise<IsoSignature> {
  const keyring = await readKeyring(spec.keyring);
  const got = await fetchKept({ signature: spec.url }, keptDir(options.cacheDir, spec.url), {
    offline: options.offline,
    logger: options.logger,
    what: "ISO signature",
  });
  await got.keep();
  const signature = got.bytes.signature;
  return {
    signature,
    keyring,
    digest: createHash("sha256").update(signature).digest("hex"),
    url: spec.url,
  };
}

/**
 * Checks a detached signature over bytes fed with `write` (gpgv reads them from its standard
 * input as they come); `finish` resolves with the signer once gpgv accepts them.
 */
export async function streamVerifier(
  sig: IsoSignature,
  what: string,
): Promise<{
  write(piece: Buffer): Promise<void>;
  finish(): Promise<{ signer: string; fingerprint: string }>;
  abort(): Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), "inetboot-gpgv-"));
  await writeFile(join(dir, "keyring.gpg"), sig.keyring);
  await writeFile(join(dir, "data.sig"), sig.signature);
  const child = spawn(
    "gpgv",
    [
      "--homedir",
      dir,
      "--status-fd",
      "1",
      "--keyring",
      join(dir, "keyring.gpg"),
      join(dir, "data.sig"),
      "-",
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<GpgvRun>((resolveRun, reject) => {
    child.on("error", (err) => reject(gpgvMissing(err) ? new ChecksumsError(GPGV_MISSING) : err));
    child.on("close", (code) => resolveRun({ code: code ?? 1, stdout, stderr }));
  });
  exited.catch(() => undefined); // awaited by finish or abort; never an unhandled rejection
  // gpgv may stop reading early (a bad signature packet): writes then fail, the verdict tells.
  child.stdin.on("error", () => undefined);
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  return {
    write: (piece) =>
      new Promise<void>((resolveWrite) => {
        const stdin = child.stdin;
        // Up to IN_FLIGHT bytes wait in the pipe's buffer, so gpgv never starves while the
        // next piece is read.
        if (
          stdin.destroyed ||
          stdin.writableEnded ||
          stdin.write(piece) ||
          stdin.writableLength < IN_FLIGHT
        ) {
          resolveWrite();
          return;
        }
        const done = (): void => {
          stdin.off("drain", done);
          stdin.off("close", done);
          resolveWrite();
        };
        stdin.once("drain", done);
        stdin.once("close", done);
      }),
    finish: async () => {
      child.stdin.end();
      try {
        return gpgvVerdict(
          await exited,
          what,
          "the ISO (it is not the ISO that was signed)",
          "refusing to boot it",
        );
      } finally {
        await cleanup();
      }
    },
    abort: async () => {
      child.kill();
      await exited.catch(() => undefined);
      await cleanup();
    },
  };
}
