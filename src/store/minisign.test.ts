import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  decodePublicKey,
  decodeSecretKey,
  encodePublicKey,
  encodeSecretKey,
  formatKeyId,
  generateKeyPair,
  signMessage,
  verifySignature,
} from "./minisign.ts";
import { loadTrustedKeys } from "./trust.ts";

describe("minisign", () => {
  const sk = generateKeyPair();
  const message = Buffer.from('{"name":"x"}\n');
  const sig = signMessage(sk, message, { trustedComment: "timestamp:1\tfile:1.json" });

  it("round-trips keys through their text forms", () => {
    const pub = decodePublicKey(encodePublicKey(sk));
    assert.ok(pub.key.equals(sk.key) && pub.keyId.equals(sk.keyId));
    const back = decodeSecretKey(encodeSecretKey(sk));
    assert.ok(back.seed.equals(sk.seed) && back.key.equals(sk.key));
    assert.match(
      encodePublicKey(sk),
      new RegExp(`minisign public key ${formatKeyId(sk.keyId)}\\n`),
    );
  });

  it("verifies its own signatures and returns the trusted comment", () => {
    const v = verifySignature(message, sig, { trusted: [sk] });
    assert.equal(v.trustedComment, "timestamp:1\tfile:1.json");
  });

  it("refuses a changed message, a changed trusted comment and an unknown key", () => {
    assert.throws(() => verifySignature(Buffer.from('{"name":"y"}\n'), sig, { trusted: [sk] }), {
      message: /does not match the signed file/,
    });
    const lines = sig.split("\n");
    lines[2] = "trusted comment: timestamp:2\tfile:1.json";
    assert.throws(() => verifySignature(message, lines.join("\n"), { trusted: [sk] }), {
      message: /trusted comment was altered/,
    });
    assert.throws(() => verifySignature(message, sig, { trusted: [generateKeyPair()] }), {
      message: /not trusted/,
    });
  });

  it("verifies a signature made by the minisign tool (fixed vector)", () => {
    // Made with: minisign -G -W; minisign -S -m msg -t "tc here" (msg = "hello release\n").
    const pub = decodePublicKey("RWQQuSsXg3k7NaiAVyp7pX4J6+KW5KiOQ80ILoe7nQ5oroNiy+IJ+urc");
    const minisig = [
      "untrusted comment: signature from minisign secret key",
      "RUQQuSsXg3k7NfRbLguMKzw155IxDsxlnefeNRPUyJ1qAIlRDh2mKePtx8fKhgtPpVVsCdOAAjO3A4T1wPz3GFvkX10Yb3PWrwo=",
      "trusted comment: tc here",
      "sgb2ptQNgtzzlcjwYjdo6YE++nmRE7lYDhpTamCqEDeLzVjmUfoBdsLCHxnINdGXsWfNdBrRBqPtf53vhayrAg==",
      "",
    ].join("\n");
    assert.equal(
      verifySignature(Buffer.from("hello release\n"), minisig, { trusted: [pub] }).trustedComment,
      "tc here",
    );
  });

  it("rejects malformed keys and signatures with what was expected", () => {
    assert.throws(() => decodePublicKey("garbage", "k.pub"), {
      message: /Cannot read k\.pub: expected a minisign public key/,
    });
    assert.throws(() => decodeSecretKey("garbage", "k"), {
      message: /expected an inetboot secret key/,
    });
    assert.throws(() => verifySignature(message, "x\ny", { trusted: [sk] }), {
      message: /expected a minisign signature/,
    });
  });
});

describe("trusted keys", () => {
  it("loads a key line, a .pub file and a file of several keys", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "keys-"));
    t.after(() => rmSync(dir, { recursive: true }));
    const [a, b] = [generateKeyPair(), generateKeyPair()];
    writeFileSync(join(dir, "a.pub"), encodePublicKey(a));
    const bLine = encodePublicKey(b).split("\n")[1];
    writeFileSync(join(dir, "trusted"), `# fleet keys\n${encodePublicKey(a)}${bLine}\n`);
    const ids = (values: string[]): string[] =>
      loadTrustedKeys(values).map((k) => formatKeyId(k.keyId));
    assert.deepEqual(ids([bLine]), [formatKeyId(b.keyId)]);
    assert.deepEqual(ids([join(dir, "a.pub")]), [formatKeyId(a.keyId)]);
    assert.deepEqual(ids([join(dir, "trusted")]), [formatKeyId(a.keyId), formatKeyId(b.keyId)]);
    assert.throws(() => loadTrustedKeys([join(dir, "missing")]), {
      message: /Cannot read trusted key .*missing/,
    });
  });
});
