// A detached OpenPGP signature over a whole ISO (Arch Linux's `.iso.sig`): loaded with its
// keyring (kept in the cache for offline starts), then checked by gpgv as the ISO streams by.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { drained } from "../lib/drained.ts";
import type { Logger } from "../lib/log.ts";
import { ChecksumsError } from "./checksums-error.ts";
import { GPGV_MISSING, gpgvMissing, gpgvVerdict } from "./gpgv.ts";
import type { GpgvRun } from "./gpgv.ts";
import { fetchKept, keptDir } from "./kept-files.ts";
import { readKeyring } from "./keyring.ts";

/** Bytes fed to gpgv that may wait in its pipe's buffer (streamVerifier). */
const IN_FLIGHT = 16 << 20;

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
    write: async (piece) => {
      const stdin = child.stdin;
      if (stdin.destroyed || stdin.writableEnded) return;
      stdin.write(piece);
      // Up to IN_FLIGHT bytes wait in the pipe's buffer, so gpgv never starves while the next
      // piece is read.
      await drained(stdin, IN_FLIGHT - 1);
    },
    finish: async () => {
      child.stdin.end();
      try {
        return gpgvVerdict(await exited, {
          what,
          changed: "the ISO (it is not the ISO that was signed)",
          consequence: "refusing to boot it",
        });
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
