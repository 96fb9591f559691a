// Signed checksum lists against real gpg-made keys and signatures, checked by the real gpgv:
// Ubuntu's layout (SHA256SUMS + detached .gpg, binary keyring), Fedora's (clearsigned CHECKSUM
// with BSD lines, armoured key), and what must be refused: a changed list, another signer, text
// outside a clearsigned block, a list without the ISO, no signature for an unsigned list; the
// copy kept in the cache serves offline.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { gpgKey, requireGpg } from "../../test/gpg.ts";
import { binaryKeyring, findSha256, signedSha256 } from "./signed-checksums.ts";

const HASH_A = "a".repeat(64);
const HASH_B = "0123456789abcdef".repeat(4);

describe("signed checksum lists", () => {
  it("finds the hash in GNU and BSD lines, and names what a list holds when the ISO is not there", () => {
    const gnu = `${HASH_A} *ubuntu-24.04-desktop-amd64.iso\n${HASH_B}  ./other.iso\n`;
    assert.equal(findSha256(gnu, "ubuntu-24.04-desktop-amd64.iso", "SHA256SUMS"), HASH_A);
    assert.equal(findSha256(gnu, "other.iso", "SHA256SUMS"), HASH_B);
    const bsd = `# Fedora\nSHA256 (Fedora-40.iso) = ${HASH_B.toUpperCase()}\n`;
    assert.equal(findSha256(bsd, "Fedora-40.iso", "CHECKSUM"), HASH_B);
    assert.throws(
      () => findSha256(gnu, "missing.iso", "SHA256SUMS"),
      /SHA256SUMS lists no missing\.iso \(it lists ubuntu-24\.04-desktop-amd64\.iso, other\.iso\); give checksums\.name/,
    );
    assert.throws(
      () => findSha256(`${"c".repeat(128)}  x.iso\n`, "x.iso", "SHA512SUMS"),
      /SHA512SUMS has no SHA-256 lines/,
    );
  });

  it("decodes armoured keys (headers, CRC line) to the same bytes as the binary export", (t) => {
    if (!requireGpg(t)) return;
    const dir = mkdtempSync(join(tmpdir(), "inetboot-keys-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const key = gpgKey(t, "Armour Test <armour@example.org>");
    const bin = readFileSync(key.exportTo(join(dir, "k.gpg"), false));
    const asc = readFileSync(key.exportTo(join(dir, "k.asc"), true));
    assert.ok(asc.toString().includes("BEGIN PGP PUBLIC KEY BLOCK"));
    assert.deepEqual(binaryKeyring([{ name: "k.asc", bytes: asc }]), bin);
    assert.deepEqual(binaryKeyring([{ name: "k.gpg", bytes: bin }]), bin);
  });

  it("accepts lists signed by the keyring's key, detached or clearsigned; refuses everything else", async (t) => {
    if (!requireGpg(t)) return;
    const dir = mkdtempSync(join(tmpdir(), "inetboot-sums-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const publisher = gpgKey(t, "Test Publisher <cdimage@example.org>");
    const stranger = gpgKey(t, "Someone Else <mallory@example.org>");
    const keyring = publisher.exportTo(join(dir, "publisher.gpg"), false);
    const armoured = publisher.exportTo(join(dir, "publisher.asc"), true);
    const cacheDir = join(dir, "cache");
    const iso = "https://releases.example.org/24.04/ubuntu-24.04-desktop-amd64.iso";

    // Ubuntu: SHA256SUMS with a detached signature.
    const sums = join(dir, "SHA256SUMS");
    writeFileSync(sums, `${HASH_A} *ubuntu-24.04-desktop-amd64.iso\n${HASH_B} *other.iso\n`);
    publisher.detachSign(sums, `${sums}.gpg`);
    const ok = await signedSha256(
      { url: sums, signature: `${sums}.gpg`, keyring: [keyring] },
      iso,
      { cacheDir },
    );
    assert.equal(ok.sha256, HASH_A);
    assert.equal(ok.name, "ubuntu-24.04-desktop-amd64.iso");
    assert.match(ok.signer, /Test Publisher <cdimage@example\.org>/);
    assert.match(ok.fingerprint, /^[0-9A-F]{40}$/);
    assert.equal(ok.from, "origin");

    // Offline: the kept copy is checked again and used, even when the origin's is gone.
    rmSync(sums);
    const offline = await signedSha256(
      { url: sums, signature: `${sums}.gpg`, keyring: [keyring] },
      iso,
      { cacheDir, offline: true },
    );
    assert.deepEqual([offline.sha256, offline.from], [HASH_A, "cache"]);
    const unreachable = await signedSha256(
      { url: sums, signature: `${sums}.gpg`, keyring: [keyring] },
      iso,
      { cacheDir },
    );
    assert.equal(unreachable.from, "cache");
    await assert.rejects(
      signedSha256({ url: join(dir, "never"), keyring: [keyring] }, iso, {
        cacheDir,
        offline: true,
      }),
      /offline, and no copy of the checksum list is kept; run once online/,
    );

    // A changed list: the signature no longer matches.
    writeFileSync(sums, `${HASH_B} *ubuntu-24.04-desktop-amd64.iso\n`);
    await assert.rejects(
      signedSha256({ url: sums, signature: `${sums}.gpg`, keyring: [keyring] }, iso, {
        cacheDir: join(dir, "cache2"),
      }),
      /signature not accepted: the signature does not match the list \(the list was changed\)/,
    );
    // Signed by a key not in the keyring.
    stranger.detachSign(sums, `${sums}.gpg`);
    await assert.rejects(
      signedSha256({ url: sums, signature: `${sums}.gpg`, keyring: [keyring] }, iso, {
        cacheDir: join(dir, "cache2"),
      }),
      /signature not accepted: it is not signed by a key in the keyring/,
    );
    // A list that is not clearsigned needs its signature.
    await assert.rejects(
      signedSha256({ url: sums, keyring: [keyring] }, iso, { cacheDir: join(dir, "cache2") }),
      /is not clearsigned: give checksums\.signature/,
    );

    // Fedora: a clearsigned CHECKSUM with BSD lines, the key armoured. Text outside the signed
    // block (a line added after it, naming the ISO with another hash) is not read.
    const plain = join(dir, "CHECKSUM.txt");
    writeFileSync(plain, `# Fedora-40 x86_64\nSHA256 (Fedora-Live-40.iso) = ${HASH_B}\n`);
    const checksum = join(dir, "CHECKSUM");
    publisher.clearSign(plain, checksum);
    writeFileSync(
      checksum,
      readFileSync(checksum, "utf8") + `SHA256 (Fedora-Live-40.iso) = ${HASH_A}\n`,
    );
    const fedora = await signedSha256(
      { url: checksum, keyring: [armoured] },
      "/srv/iso/Fedora-Live-40.iso",
      { cacheDir },
    );
    assert.equal(fedora.sha256, HASH_B);
    // A line added inside the clearsigned text breaks its signature.
    const signed = readFileSync(checksum, "utf8");
    writeFileSync(
      checksum,
      signed.replace("# Fedora-40 x86_64\n", `# Fedora-40 x86_64\nSHA256 (evil.iso) = ${HASH_A}\n`),
    );
    await assert.rejects(
      signedSha256({ url: checksum, keyring: [armoured] }, "/srv/iso/Fedora-Live-40.iso", {
        cacheDir: join(dir, "cache3"),
      }),
      /signature not accepted/,
    );
    // The name can be given when the ISO is served under another one.
    writeFileSync(checksum, signed);
    const renamed = await signedSha256(
      { url: checksum, keyring: [armoured], name: "Fedora-Live-40.iso" },
      "/srv/iso/fedora.iso",
      { cacheDir },
    );
    assert.equal(renamed.sha256, HASH_B);
    await assert.rejects(
      signedSha256({ url: checksum, keyring: [armoured] }, "/srv/iso/fedora.iso", { cacheDir }),
      /lists no fedora\.iso \(it lists Fedora-Live-40\.iso\)/,
    );
  });
});
