// A throwaway OpenPGP signing key made by the real gpg, for tests of signed checksum lists:
// export it (binary or armoured) and sign files with it (detached or clearsigned).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireOrSkip } from "./helpers.ts";
import type { Cleanup, Skipper } from "./helpers.ts";

/** Skips the test (and says which packages) unless gpg and gpgv run; under CI=true, fails. */
export function requireGpg(t: Skipper): boolean {
  try {
    execFileSync("gpg", ["--version"], { stdio: "ignore" });
    execFileSync("gpgv", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return requireOrSkip(t, "gpg and gpgv are not installed (Debian packages gnupg, gpgv)");
  }
}

export interface GpgKey {
  exportTo(file: string, armor: boolean): string;
  detachSign(file: string, out: string): void;
  clearSign(file: string, out: string): void;
}

/** A new ed25519 signing key for `uid` in a gpg home of its own (removed after the test). */
export function gpgKey(t: Cleanup, uid: string): GpgKey {
  const home = mkdtempSync(join(tmpdir(), "inetboot-gpg-"));
  t.after(() => {
    execFileSync("gpgconf", ["--homedir", home, "--kill", "gpg-agent"], { stdio: "ignore" });
    rmSync(home, { recursive: true, force: true });
  });
  const gpg = (...args: string[]): Buffer =>
    execFileSync("gpg", ["--homedir", home, "--batch", "--yes", "--quiet", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
  gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never");
  return {
    exportTo: (file, armor) => {
      writeFileSync(file, gpg(...(armor ? ["--armor"] : []), "--export", uid));
      return file;
    },
    detachSign: (file, out) =>
      void gpg("--local-user", uid, "--output", out, "--detach-sign", file),
    clearSign: (file, out) => void gpg("--local-user", uid, "--output", out, "--clearsign", file),
  };
}
