// Running gpgv (GnuPG's signature-only verifier) and reading its status lines (--status-fd):
// who signed, or why the signature is not accepted.
import { execFile } from "node:child_process";
import { ChecksumsError } from "./checksums-error.ts";

export interface GpgvRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function gpgvMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === "ENOENT";
}

export const GPGV_MISSING =
  "gpgv is not installed (Debian package gpgv): it checks the publisher's signature";

export function gpgv(args: string[]): Promise<GpgvRun> {
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
export function gpgvVerdict(
  r: GpgvRun,
  about: { what: string; changed: string; consequence: string },
): { signer: string; fingerprint: string } {
  const { what, changed, consequence } = about;
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
