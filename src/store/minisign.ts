// Ed25519 keys and signatures in minisign's formats, so `minisign -V -p KEY.pub -m FILE`
// checks what we sign. Format: https://jedisct1.github.io/minisign/ (public key "Ed" + key id +
// key; signature "ED" + key id + Ed25519(BLAKE2b-512(file)), then a global signature over the
// signature and the trusted comment).
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign,
  verify,
} from "node:crypto";
import type { KeyObject } from "node:crypto";

const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const SECRET_KEY_HEADER = "untrusted comment: inetboot secret key";

export class KeyFormatError extends Error {
  readonly code = "ERR_KEY_FORMAT";
}

export class SignatureError extends Error {
  readonly code = "ERR_SIGNATURE";
}

export interface PublicKey {
  /** 8 bytes, as minisign stores it. */
  keyId: Buffer;
  /** 32-byte Ed25519 public key. */
  key: Buffer;
}

export interface SecretKey extends PublicKey {
  /** 32-byte Ed25519 seed. */
  seed: Buffer;
}

/** The key id as minisign prints it: the 8 bytes read as a little-endian integer, in upper-case hex. */
export function formatKeyId(keyId: Uint8Array): string {
  return Buffer.from(keyId).reverse().toString("hex").toUpperCase();
}

function privateKeyObject(seed: Buffer): KeyObject {
  return createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: "der",
    type: "pkcs8",
  });
}

function publicKeyObject(key: Buffer): KeyObject {
  return createPublicKey({
    key: Buffer.concat([SPKI_ED25519_PREFIX, key]),
    format: "der",
    type: "spki",
  });
}

export function generateKeyPair(): SecretKey {
  const seed = randomBytes(32);
  const spki = createPublicKey(privateKeyObject(seed)).export({ format: "der", type: "spki" });
  return { keyId: randomBytes(8), key: spki.subarray(SPKI_ED25519_PREFIX.length), seed };
}

export function encodePublicKey(pub: PublicKey): string {
  const body = Buffer.concat([Buffer.from("Ed"), pub.keyId, pub.key]).toString("base64");
  return `untrusted comment: minisign public key ${formatKeyId(pub.keyId)}\n${body}\n`;
}

/**
 * Decodes a minisign public key: either the whole `.pub` file or just its base64 line
 * (`minisign -P` style). `name` names the source in errors.
 */
export function decodePublicKey(text: string, name = "public key"): PublicKey {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("untrusted comment:"));
  const raw = lines.length === 1 ? Buffer.from(lines[0], "base64") : Buffer.alloc(0);
  if (raw.length !== 42 || raw.toString("latin1", 0, 2) !== "Ed") {
    throw new KeyFormatError(
      `Cannot read ${name}: expected a minisign public key (a comment line and one base64 line of 42 bytes starting "Ed")`,
    );
  }
  return { keyId: raw.subarray(2, 10), key: raw.subarray(10, 42) };
}

export function encodeSecretKey(sk: SecretKey): string {
  const body = Buffer.concat([Buffer.from("Ed"), sk.keyId, sk.seed]).toString("base64");
  return `${SECRET_KEY_HEADER} ${formatKeyId(sk.keyId)}\n${body}\n`;
}

export function decodeSecretKey(text: string, name = "secret key"): SecretKey {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const raw = lines[0]?.startsWith(SECRET_KEY_HEADER)
    ? Buffer.from(lines[1] ?? "", "base64")
    : null;
  if (raw === null || raw.length !== 42 || raw.toString("latin1", 0, 2) !== "Ed") {
    throw new KeyFormatError(
      `Cannot read ${name}: expected an inetboot secret key written by "inetboot keygen"`,
    );
  }
  const seed = raw.subarray(10, 42);
  const spki = createPublicKey(privateKeyObject(seed)).export({ format: "der", type: "spki" });
  return { keyId: raw.subarray(2, 10), seed, key: spki.subarray(SPKI_ED25519_PREFIX.length) };
}

export interface Signature {
  keyId: Buffer;
  trustedComment: string;
  untrustedComment: string;
}

/** Signs `message` (prehashed, minisign's default "ED" algorithm) and returns the .minisig text. */
export function signMessage(
  sk: SecretKey,
  message: Uint8Array,
  options: { trustedComment: string; untrustedComment?: string },
): string {
  if (/[\r\n]/.test(options.trustedComment)) {
    throw new SignatureError("A trusted comment cannot contain a line break");
  }
  const key = privateKeyObject(sk.seed);
  const digest = createHash("blake2b512").update(message).digest();
  const signature = sign(null, digest, key);
  const global = sign(null, Buffer.concat([signature, Buffer.from(options.trustedComment)]), key);
  const untrusted = options.untrustedComment ?? "signature from inetboot secret key";
  return (
    `untrusted comment: ${untrusted}\n` +
    `${Buffer.concat([Buffer.from("ED"), sk.keyId, signature]).toString("base64")}\n` +
    `trusted comment: ${options.trustedComment}\n` +
    `${global.toString("base64")}\n`
  );
}

/** Reads the key id of a .minisig without verifying it (to pick the key or report the signer). */
export function signatureKeyId(sigText: string, name = "signature"): Buffer {
  return parseSignature(sigText, name).keyId;
}

interface ParsedSignature {
  algorithm: string;
  keyId: Buffer;
  signature: Buffer;
  trustedComment: string;
  untrustedComment: string;
  global: Buffer;
}

function parseSignature(sigText: string, name: string): ParsedSignature {
  const lines = sigText.split(/\r?\n/);
  const fail = (what: string): never => {
    throw new SignatureError(`Cannot read ${name}: ${what}`);
  };
  if (lines.length < 4 || !lines[0].startsWith("untrusted comment:")) {
    fail("expected a minisign signature (4 lines, the first an untrusted comment)");
  }
  const raw = Buffer.from(lines[1].trim(), "base64");
  const algorithm = raw.toString("latin1", 0, 2);
  if (raw.length !== 74 || (algorithm !== "ED" && algorithm !== "Ed")) {
    fail("the signature line is not 74 bytes starting with ED or Ed");
  }
  if (!lines[2].startsWith("trusted comment: ")) fail("the third line is not a trusted comment");
  const global = Buffer.from(lines[3].trim(), "base64");
  if (global.length !== 64) fail("the global signature is not 64 bytes");
  return {
    algorithm,
    keyId: raw.subarray(2, 10),
    signature: raw.subarray(10, 74),
    trustedComment: lines[2].slice("trusted comment: ".length),
    untrustedComment: lines[0].slice("untrusted comment:".length).trim(),
    global,
  };
}

/**
 * Verifies a .minisig over `message` against the trusted keys; returns the signature's facts.
 * Throws SignatureError naming what failed (unknown key, bad signature, bad trusted comment).
 */
export function verifySignature(
  message: Uint8Array,
  sigText: string,
  options: { trusted: readonly PublicKey[]; name?: string },
): Signature & { key: PublicKey } {
  const name = options.name ?? "signature";
  const sig = parseSignature(sigText, name);
  const key = options.trusted.find((k) => k.keyId.equals(sig.keyId));
  if (!key) {
    const known = options.trusted.map((k) => formatKeyId(k.keyId)).join(", ") || "none";
    throw new SignatureError(
      `${name} is signed by key ${formatKeyId(sig.keyId)}, which is not trusted (trusted: ${known}); pass its public key with --trust`,
    );
  }
  const pub = publicKeyObject(key.key);
  const signed =
    sig.algorithm === "ED" ? createHash("blake2b512").update(message).digest() : message;
  if (!verify(null, signed, pub, sig.signature)) {
    throw new SignatureError(
      `${name} does not match the signed file: the file or signature was altered`,
    );
  }
  const globalSigned = Buffer.concat([sig.signature, Buffer.from(sig.trustedComment)]);
  if (!verify(null, globalSigned, pub, sig.global)) {
    throw new SignatureError(`${name}: the trusted comment was altered`);
  }
  return {
    keyId: sig.keyId,
    trustedComment: sig.trustedComment,
    untrustedComment: sig.untrustedComment,
    key,
  };
}
