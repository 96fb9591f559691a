// `inetboot keygen`: an Ed25519 signing key, its public half minisign-compatible.
import type { Command } from "commander";
import { chmod, writeFile } from "node:fs/promises";
import {
  encodePublicKey,
  encodeSecretKey,
  formatKeyId,
  generateKeyPair,
} from "../store/minisign.ts";
import { printJson } from "./output.ts";

export function registerKeygenCommand(program: Command): void {
  program
    .command("keygen")
    .description("create an Ed25519 signing key (minisign-compatible public key in KEY.pub)")
    .requiredOption(
      "--out <key>",
      "where to write the secret key (mode 0600); the public key goes to KEY.pub",
    )
    .option("--force", "overwrite existing key files")
    .option("--json", "print the result as JSON")
    .action(async (opts: { out: string; force?: boolean; json?: boolean }) => {
      const sk = generateKeyPair();
      const flag = opts.force ? "w" : "wx";
      await writeFile(opts.out, encodeSecretKey(sk), { mode: 0o600, flag }).catch(
        (err: NodeJS.ErrnoException) => {
          throw new Error(
            err.code === "EEXIST"
              ? `${opts.out} already exists; pass --force to replace it`
              : `Cannot write ${opts.out}: ${err.message}`,
          );
        },
      );
      await chmod(opts.out, 0o600);
      const pub = encodePublicKey(sk);
      await writeFile(`${opts.out}.pub`, pub, { flag });
      const keyId = formatKeyId(sk.keyId);
      if (opts.json)
        printJson({
          keyId,
          secretKey: opts.out,
          publicKey: `${opts.out}.pub`,
          public: pub.split("\n")[1],
        });
      else {
        console.log(pub.split("\n")[1]);
        console.error(
          `Wrote secret key ${opts.out} (keep it private) and public key ${opts.out}.pub (key id ${keyId}).`,
        );
        console.error(
          `Check a release with: minisign -V -p ${opts.out}.pub -m releases/NAME/REV.json`,
        );
      }
    });
}
