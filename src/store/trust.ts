// Deciding whether a release is acceptable: its signature against the trusted keys, and the
// anti-rollback rule (never move a NAME to a lower revision than one already accepted, unless
// the release was pinned by its digest on purpose).
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { ReleaseError } from "./errors.ts";
import { isErrno, writeFileAtomic } from "../lib/atomic-file.ts";
import { decodePublicKey, formatKeyId, signatureKeyId, verifySignature } from "./minisign.ts";
import type { PublicKey } from "./minisign.ts";
import type { Release } from "./release.ts";

export interface TrustPolicy {
  /** Keys whose signatures are accepted. */
  trusted: readonly PublicKey[];
  /** Accept unsigned releases (and signed ones when no key is given) instead of refusing them. */
  insecure?: boolean;
  /** The anti-rollback state file; null keeps no state. */
  statePath?: string | null;
}

export interface TrustVerdict {
  /** Upper-case hex key id of the verified signer, or null when unsigned or unchecked. */
  signer: string | null;
  /** Whether the signature was checked against a trusted key. */
  verified: boolean;
  trustedComment: string | null;
}

/** The default anti-rollback state file: $INETBOOT_STATE_DIR, else $XDG_STATE_HOME/inetboot. */
export function defaultStatePath(): string {
  const dir =
    process.env.INETBOOT_STATE_DIR ??
    join(process.env.XDG_STATE_HOME ?? join(homedir(), ".local", "state"), "inetboot");
  return join(dir, "accepted-releases.json");
}

/**
 * Reads `--trust` values: the base64 line of a minisign public key, a `.pub` file, or a
 * trusted-keys file holding several keys (one base64 line each; comment lines are ignored).
 */
export function loadTrustedKeys(values: readonly string[]): PublicKey[] {
  return values.flatMap((value) => {
    if (/^RW[A-Za-z0-9+/=]{54}$/.test(value.trim())) return [decodePublicKey(value, "--trust key")];
    let text: string;
    try {
      text = readFileSync(value, "utf8");
    } catch (err) {
      throw new ReleaseError(`Cannot read trusted key ${value}: ${(err as Error).message}`);
    }
    const keyLines = text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("untrusted comment:"));
    if (keyLines.length === 0) throw new ReleaseError(`Trusted keys file ${value} holds no key`);
    return keyLines.map((line, i) =>
      decodePublicKey(line, keyLines.length > 1 ? `${value} key ${i + 1}` : value),
    );
  });
}

/** Checks the signature of `releaseBytes` (sigText null when there is no .minisig). */
export function checkSignature(
  releaseBytes: Uint8Array,
  sigText: string | null,
  options: { policy: TrustPolicy; where: string },
): TrustVerdict {
  const { policy, where } = options;
  if (sigText === null) {
    if (policy.insecure) return { signer: null, verified: false, trustedComment: null };
    throw new ReleaseError(
      `Release ${where} is not signed (no ${where}.minisig); pass --insecure to accept unsigned releases`,
    );
  }
  if (policy.trusted.length === 0) {
    const keyId = formatKeyId(signatureKeyId(sigText, `${where}.minisig`));
    if (policy.insecure) return { signer: keyId, verified: false, trustedComment: null };
    throw new ReleaseError(
      `Release ${where} is signed by key ${keyId} but no key is trusted; pass --trust KEY.pub (or --insecure to skip the check)`,
    );
  }
  try {
    const sig = verifySignature(releaseBytes, sigText, {
      trusted: policy.trusted,
      name: `${where}.minisig`,
    });
    return { signer: formatKeyId(sig.keyId), verified: true, trustedComment: sig.trustedComment };
  } catch (err) {
    throw new ReleaseError(`Refusing release ${where}: ${(err as Error).message}`);
  }
}

interface AcceptedState {
  accepted: Record<string, { revision: number; digest: string; at: string }>;
}

function readState(path: string): AcceptedState {
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as AcceptedState;
    if (parsed && typeof parsed.accepted === "object" && parsed.accepted !== null) return parsed;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return { accepted: {} };
    throw new ReleaseError(
      `Cannot read the accepted-releases state ${path}: ${(err as Error).message}; fix or delete the file`,
    );
  }
  throw new ReleaseError(
    `Cannot read the accepted-releases state ${path}: expected {"accepted": {...}}`,
  );
}

/**
 * Enforces and records the anti-rollback rule. A release pinned by digest may go back; any
 * other must not be older than the newest revision accepted before for its name.
 */
export async function acceptRelease(
  release: Release,
  options: { digest: string; pinned: boolean; statePath: string | null | undefined },
): Promise<void> {
  const path = options.statePath;
  if (!path) return;
  const state = readState(path);
  const prev = state.accepted[release.name];
  if (prev && release.revision < prev.revision && !options.pinned) {
    throw new ReleaseError(
      `Refusing ${release.name} revision ${release.revision}: revision ${prev.revision} was already accepted ` +
        `(a downgrade). To roll back on purpose, pin the release: ${release.name}@sha256:${options.digest}`,
    );
  }
  if (!prev || release.revision > prev.revision) {
    state.accepted[release.name] = {
      revision: release.revision,
      digest: options.digest,
      at: new Date().toISOString(),
    };
    await writeFileAtomic(path, `${JSON.stringify(state, null, 2)}\n`);
  }
}
