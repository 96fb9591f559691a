// The image store through the real CLI: round trips, trust, and the fault cases.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { zstdDecompressSync } from "node:zlib";
import { CLI, inetboot, inetbootOk, tempDir, textLike, writeImage } from "./helpers.ts";

function chunkFiles(store: string): string[] {
  const root = join(store, "chunks");
  return readdirSync(root).flatMap((d) => readdirSync(join(root, d)).map((f) => join(root, d, f)));
}

function onlyIndex(store: string): string {
  const files = readdirSync(join(store, "indexes")).filter((f) => f.endsWith(".caibx"));
  assert.equal(files.length, 1);
  return join(store, "indexes", files[0]);
}

describe("pack and extract round trips", () => {
  const cases: [string, (number | { zero: number } | Buffer)[]][] = [
    ["empty file", []],
    ["one byte", [1]],
    ["tiny file", [100]],
    ["a size that is a multiple of nothing", [1_000_003]],
    ["zero regions between data", [300_000, { zero: 3_000_000 }, 70_001, { zero: 262_144 }, 5]],
    ["all zeros", [{ zero: 2_000_000 }]],
    ["compressible text", [textLike(1_500_000)]],
  ];
  for (const [name, parts] of cases) {
    it(`${name}: byte-exact and sparse`, async (t) => {
      const dir = tempDir(t);
      const image = join(dir, "image.bin");
      const data = writeImage(image, parts);
      const store = join(dir, "store");
      const out = join(dir, "out.bin");
      await inetbootOk([
        "pack",
        image,
        "--store",
        store,
        "--name",
        "img",
        "--chunk-size",
        "16K:64K:256K",
      ]);
      await inetbootOk([
        "extract",
        "img",
        out,
        "--store",
        store,
        "--insecure",
        "--state",
        join(dir, "state.json"),
      ]);
      assert.ok(readFileSync(out).equals(data), "extracted bytes differ");
      const zeros = parts.reduce<number>(
        (n, p) => n + (typeof p === "object" && "zero" in p ? p.zero : 0),
        0,
      );
      if (zeros >= 1_000_000) {
        // Holes where the image is zero: far fewer blocks allocated than the size.
        const allocated = statSync(out).blocks * 512;
        assert.ok(
          allocated < data.length - zeros / 2,
          `output allocates ${allocated} of ${data.length} bytes`,
        );
      }
    });
  }

  it("reuses chunks across revisions, and diff/ls report what is shared", async (t) => {
    const dir = tempDir(t);
    const store = join(dir, "store");
    const v1 = textLike(3_000_000, 7);
    const v2 = Buffer.concat([
      v1.subarray(0, 1_000_000),
      Buffer.from("a small change"),
      v1.subarray(1_000_000),
    ]);
    writeFileSync(join(dir, "v1"), v1);
    writeFileSync(join(dir, "v2"), v2);
    const p1 = JSON.parse(
      (await inetbootOk(["pack", join(dir, "v1"), "--store", store, "--name", "os", "--json"]))
        .stdout,
    ) as Record<string, number>;
    const p2 = JSON.parse(
      (await inetbootOk(["pack", join(dir, "v2"), "--store", store, "--name", "os", "--json"]))
        .stdout,
    ) as Record<string, number>;
    assert.equal(p1.revision, 1);
    assert.equal(p2.revision, 2);
    assert.ok(
      p2.reusedChunks >= p2.chunks - 3,
      `revision 2 reused only ${p2.reusedChunks} of ${p2.chunks}`,
    );
    assert.ok(p2.newChunks >= 1 && p2.newChunks <= 3);

    const diff = JSON.parse(
      (await inetbootOk(["diff", "os@1", "os@2", "--store", store, "--json"])).stdout,
    ) as Record<string, number>;
    assert.equal(diff.fetchChunks, p2.newChunks);
    assert.ok(
      diff.fetchBytes > 0 && diff.fetchBytes < 600_000,
      `diff says ${diff.fetchBytes} bytes`,
    );
    assert.ok(diff.fetchStoredBytes > 0 && diff.fetchStoredBytes < diff.fetchBytes);

    const ls = JSON.parse((await inetbootOk(["ls", "--store", store, "--json"])).stdout) as Record<
      string,
      unknown
    >[];
    assert.deepEqual(
      ls.map((r) => [r.name, r.revision, r.size]),
      [
        ["os", 1, v1.length],
        ["os", 2, v2.length],
      ],
    );
    assert.equal(ls[0].sharedWithPrevious, null);
    assert.equal(ls[1].sharedWithPrevious, v2.length - diff.fetchBytes);
    const text = (await inetbootOk(["ls", "--store", store])).stdout;
    assert.match(text, /os\s+2\s+2\.86 MiB\s+45\s+unsigned\s+2\.79 MiB \(98%\)/);

    // Pinning by revision and the release's own parent link.
    const r2 = JSON.parse(readFileSync(join(store, "releases/os/2.json"), "utf8")) as {
      parent: { revision: number };
    };
    assert.equal(r2.parent.revision, 1);
    await inetbootOk([
      "extract",
      "os@1",
      join(dir, "o1"),
      "--store",
      store,
      "--insecure",
      "--state",
      join(dir, "s.json"),
    ]);
    assert.ok(readFileSync(join(dir, "o1")).equals(v1));
  });
});

describe("trust", () => {
  async function signedStore(t: Parameters<typeof tempDir>[0]) {
    const dir = tempDir(t);
    const store = join(dir, "store");
    const key = join(dir, "release.key");
    const keygen = await inetbootOk(["keygen", "--out", key]);
    assert.match(keygen.stdout.trim(), /^RW[A-Za-z0-9+/]{54}$/);
    assert.equal(statSync(key).mode & 0o777, 0o600);
    writeImage(join(dir, "v1"), [200_000]);
    writeImage(join(dir, "v2"), [300_000]);
    await inetbootOk(["pack", join(dir, "v1"), "--store", store, "--name", "os", "--key", key]);
    await inetbootOk(["pack", join(dir, "v2"), "--store", store, "--name", "os", "--key", key]);
    return { dir, store, key, pub: `${key}.pub`, state: join(dir, "state.json") };
  }

  it("accepts a release signed by a trusted key, refuses untrusted, unsigned and tampered ones", async (t) => {
    const s = await signedStore(t);
    const out = join(s.dir, "out");
    await inetbootOk([
      "extract",
      "os",
      out,
      "--store",
      s.store,
      "--trust",
      s.pub,
      "--state",
      s.state,
    ]);
    assert.ok(readFileSync(out).equals(readFileSync(join(s.dir, "v2"))));

    const noKey = await inetboot(["extract", "os", out, "--store", s.store, "--state", s.state]);
    assert.equal(noKey.code, 1);
    assert.match(noKey.stderr, /signed by key [0-9A-F]{16} but no key is trusted; pass --trust/);

    const other = join(s.dir, "other.key");
    await inetbootOk(["keygen", "--out", other]);
    const wrong = await inetboot([
      "extract",
      "os",
      out,
      "--store",
      s.store,
      "--trust",
      `${other}.pub`,
      "--state",
      s.state,
    ]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /not trusted/);

    const release = join(s.store, "releases/os/2.json");
    const original = readFileSync(release, "utf8");
    writeFileSync(release, original.replace('"revision": 2', '"revision": 2 '));
    const tampered = await inetboot([
      "extract",
      "os",
      out,
      "--store",
      s.store,
      "--trust",
      s.pub,
      "--state",
      s.state,
    ]);
    assert.equal(tampered.code, 1);
    assert.match(tampered.stderr, /Refusing release .*2\.json: .*does not match the signed file/);
    assert.doesNotMatch(tampered.stderr, /\n\s+at /, "no stack trace");
    writeFileSync(release, original);

    writeImage(join(s.dir, "v3"), [1000]);
    await inetbootOk(["pack", join(s.dir, "v3"), "--store", s.store, "--name", "os"]);
    const unsigned = await inetboot([
      "extract",
      "os",
      out,
      "--store",
      s.store,
      "--trust",
      s.pub,
      "--state",
      s.state,
    ]);
    assert.equal(unsigned.code, 1);
    assert.match(unsigned.stderr, /is not signed .*pass --insecure/);
    await inetbootOk(["extract", "os", out, "--store", s.store, "--insecure", "--state", s.state]);
  });

  it("never moves to a lower revision unless the release is pinned by digest", async (t) => {
    const s = await signedStore(t);
    const out = join(s.dir, "out");
    await inetbootOk([
      "extract",
      "os@2",
      out,
      "--store",
      s.store,
      "--trust",
      s.pub,
      "--state",
      s.state,
    ]);
    const down = await inetboot([
      "extract",
      "os@1",
      out,
      "--store",
      s.store,
      "--trust",
      s.pub,
      "--state",
      s.state,
    ]);
    assert.equal(down.code, 1);
    assert.match(
      down.stderr,
      /revision 2 was already accepted .*pin the release: os@sha256:[0-9a-f]{64}/,
    );
    const pin = /os@sha256:[0-9a-f]{64}/.exec(down.stderr)![0];
    await inetbootOk([
      "extract",
      pin,
      out,
      "--store",
      s.store,
      "--trust",
      s.pub,
      "--state",
      s.state,
    ]);
    assert.ok(readFileSync(out).equals(readFileSync(join(s.dir, "v1"))));

    // A release file replaced by an older signed one is refused for its path mismatch.
    writeFileSync(
      join(s.store, "releases/os/2.json"),
      readFileSync(join(s.store, "releases/os/1.json")),
    );
    writeFileSync(
      join(s.store, "releases/os/2.json.minisig"),
      readFileSync(join(s.store, "releases/os/1.json.minisig")),
    );
    const moved = await inetboot([
      "extract",
      "os@2",
      out,
      "--store",
      s.store,
      "--trust",
      s.pub,
      "--state",
      join(s.dir, "fresh.json"),
    ]);
    assert.equal(moved.code, 1);
    assert.match(moved.stderr, /describes os revision 1, expected os revision 2/);
  });

  it("reads a release given as a file path", async (t) => {
    const s = await signedStore(t);
    const out = join(s.dir, "out");
    await inetbootOk([
      "extract",
      join(s.store, "releases/os/1.json"),
      out,
      "--trust",
      s.pub,
      "--state",
      s.state,
    ]);
    assert.ok(readFileSync(out).equals(readFileSync(join(s.dir, "v1"))));
  });
});

describe("bare indexes carry no signature", () => {
  async function signed(t: Parameters<typeof tempDir>[0]) {
    const dir = tempDir(t);
    const store = join(dir, "store");
    const key = join(dir, "release.key");
    await inetbootOk(["keygen", "--out", key]);
    const other = join(dir, "other.key");
    await inetbootOk(["keygen", "--out", other]);
    writeImage(join(dir, "v1"), [200_000]);
    await inetbootOk(["pack", join(dir, "v1"), "--store", store, "--name", "os", "--key", key]);
    return { dir, store, index: onlyIndex(store), pub: `${key}.pub`, otherPub: `${other}.pub` };
  }

  it("extract refuses a bare .caibx with --trust, needs --insecure without, and reads it with", async (t) => {
    const s = await signed(t);
    const out = join(s.dir, "out");
    const env = { INETBOOT_STATE_DIR: s.dir };
    const trusted = await inetboot(
      ["extract", s.index, out, "--store", s.store, "--trust", s.otherPub],
      env,
    );
    assert.equal(trusted.code, 1);
    assert.match(
      trusted.stderr,
      /^inetboot: Refusing .*\.caibx is a bare index: it carries no signature, so the trusted keys cannot be checked against it; open its signed release instead .*pass --insecure/m,
    );
    assert.equal(existsSync(out), false, "nothing is written");

    const plain = await inetboot(["extract", s.index, out, "--store", s.store], env);
    assert.equal(plain.code, 1);
    assert.match(
      plain.stderr,
      /bare index: it carries no signature, so nothing vouches for its content; .*pass --insecure/,
    );
    assert.equal(existsSync(out), false);

    // --trust with --insecure is still refused: the keys would be silently ignored.
    const both = await inetboot(
      ["extract", s.index, out, "--store", s.store, "--trust", s.pub, "--insecure"],
      env,
    );
    assert.equal(both.code, 1);
    assert.match(both.stderr, /the trusted keys cannot be checked against it/);

    await inetbootOk(["extract", s.index, out, "--store", s.store, "--insecure"], env);
    assert.ok(readFileSync(out).equals(readFileSync(join(s.dir, "v1"))));
    // The signed release itself still opens with the right key.
    await inetbootOk(
      ["extract", "os", join(s.dir, "o2"), "--store", s.store, "--trust", s.pub],
      env,
    );
  });

  it("diff and cache status need an explicit --insecure for a bare index, not just no --trust", async (t) => {
    const s = await signed(t);
    const env = { INETBOOT_STATE_DIR: s.dir };
    const diff = await inetboot(["diff", s.index, "os@1", "--store", s.store, "--json"], env);
    assert.equal(diff.code, 1);
    assert.match(diff.stderr, /bare index: it carries no signature.*--insecure/);
    const ok = await inetbootOk(
      ["diff", s.index, "os@1", "--store", s.store, "--insecure", "--json"],
      env,
    );
    assert.equal((JSON.parse(ok.stdout) as { fetchChunks: number }).fetchChunks, 0);

    const status = await inetboot(
      ["cache", "status", "--cache", s.store, "--can-boot-offline", s.index],
      env,
    );
    assert.equal(status.code, 1);
    assert.match(status.stderr, /bare index: it carries no signature.*--insecure/);
  });
});

describe("faults", () => {
  async function packed(t: Parameters<typeof tempDir>[0]) {
    const dir = tempDir(t);
    const store = join(dir, "store");
    const data = writeImage(join(dir, "image"), [textLike(900_000), { zero: 600_000 }, 400_000]);
    await inetbootOk(["pack", join(dir, "image"), "--store", store, "--name", "img"]);
    return { dir, store, data, state: join(dir, "state.json") };
  }

  it("a flipped byte in a chunk: verify and extract name the chunk and fail, no output is left", async (t) => {
    const p = await packed(t);
    const victim = chunkFiles(p.store).sort((a, b) => statSync(b).size - statSync(a).size)[0];
    const id = victim.split("/").pop()!.replace(".cacnk", "");
    const bytes = readFileSync(victim);
    bytes[bytes.length >> 1] ^= 0x40;
    writeFileSync(victim, bytes);

    const v = await inetboot(["verify", "--store", p.store]);
    assert.equal(v.code, 1);
    assert.match(v.stdout, new RegExp(`CORRUPT ${id}`));
    assert.match(v.stdout, /1 corrupt — FAILED/);

    const out = join(p.dir, "out");
    const e = await inetboot([
      "extract",
      "img",
      out,
      "--store",
      p.store,
      "--insecure",
      "--state",
      p.state,
    ]);
    assert.equal(e.code, 1);
    assert.match(e.stderr, new RegExp(`Chunk ${id} is corrupt`));
    assert.equal(existsSync(out), false, "a failed extract must not leave the output file");
    assert.deepEqual(
      readdirSync(p.dir).filter((f) => f.endsWith(".tmp")),
      [],
    );
  });

  it("a missing chunk is reported by name", async (t) => {
    const p = await packed(t);
    const victim = chunkFiles(p.store).sort((a, b) => statSync(b).size - statSync(a).size)[0];
    rmSync(victim);
    const v = await inetboot(["verify", "--store", p.store, "--json"]);
    assert.equal(v.code, 1);
    const report = JSON.parse(v.stdout) as { missing: { id: string }[] };
    assert.deepEqual(
      report.missing.map((m) => m.id),
      [victim.split("/").pop()!.replace(".cacnk", "")],
    );
  });

  it("a truncated index or manifest is named with what is wrong, never a stack trace", async (t) => {
    const p = await packed(t);
    const index = onlyIndex(p.store);
    const idx = readFileSync(index);
    writeFileSync(join(p.dir, "cut.caibx"), idx.subarray(0, idx.length - 13));
    const bad = await inetboot([
      "extract",
      join(p.dir, "cut.caibx"),
      join(p.dir, "o"),
      "--store",
      p.store,
      "--insecure",
    ]);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /Cannot decode .*cut\.caibx: chunk table is \d+ bytes, expected a multiple of 40/,
    );
    assert.doesNotMatch(bad.stderr, /\n\s+at /);

    writeFileSync(index, idx.subarray(0, 100));
    const viaRelease = await inetboot([
      "extract",
      "img",
      join(p.dir, "o"),
      "--store",
      p.store,
      "--insecure",
      "--state",
      p.state,
    ]);
    assert.equal(viaRelease.code, 1);
    assert.match(viaRelease.stderr, /Index .*\.caibx does not match the digest its release names/);

    const release = join(p.store, "releases/img/1.json");
    writeFileSync(release, readFileSync(release).subarray(0, 50));
    const r = await inetboot([
      "extract",
      "img",
      join(p.dir, "o"),
      "--store",
      p.store,
      "--insecure",
      "--state",
      p.state,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Cannot read release .*releases\/img\/1\.json: not valid JSON/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it("a pack killed with SIGKILL leaves a valid store and the re-run reuses its chunks", async (t) => {
    const dir = tempDir(t);
    const store = join(dir, "store");
    const image = join(dir, "image");
    // Big enough that the kill lands mid-pack; compressible so chunks are not trivial.
    writeFileSync(image, Buffer.concat([textLike(40 << 20, 3), textLike(40 << 20, 4)]));
    const child = spawn(process.execPath, [CLI, "pack", image, "--store", store, "--name", "img"], {
      stdio: "ignore",
    });
    // Kill once some chunks exist.
    for (let i = 0; i < 400; i++) {
      await new Promise((r) => setTimeout(r, 25));
      if (existsSync(join(store, "chunks")) && readdirSync(join(store, "chunks")).length > 20)
        break;
    }
    child.kill("SIGKILL");
    await new Promise((r) => child.on("close", r));
    const before = existsSync(join(store, "chunks"))
      ? chunkFiles(store).filter((f) => f.endsWith(".cacnk"))
      : [];
    assert.ok(before.length > 0, "the pack was killed before it stored anything");
    assert.equal(
      existsSync(join(store, "releases/img/latest")),
      false,
      "a killed pack must not publish",
    );

    // Every chunk under its final name is complete and intact.
    const { verifyChunk } = await import("../src/store/chunks.ts");
    for (const f of before) {
      const data = zstdDecompressSync(readFileSync(f));
      await verifyChunk(
        readFileSync(f),
        { id: f.split("/").pop()!.replace(".cacnk", ""), size: data.length },
        f,
      );
    }

    const rerun = JSON.parse(
      (await inetbootOk(["pack", image, "--store", store, "--name", "img", "--json"])).stdout,
    ) as Record<string, number>;
    assert.ok(
      rerun.reusedChunks >= before.length,
      `re-run reused ${rerun.reusedChunks}, expected at least ${before.length}`,
    );
    assert.equal(rerun.revision, 1);
    await inetbootOk(["verify", "--store", store]);
    // gc clears the temporary files the killed pack left (with no grace period).
    await inetbootOk(["gc", "--store", store, "--grace", "0", "--yes"]);
    assert.deepEqual(
      chunkFiles(store).filter((f) => f.endsWith(".tmp")),
      [],
    );
    await inetbootOk(["verify", "--store", store]);
  });
});

describe("gc", () => {
  it("keeps the newest releases' chunks, removes the rest only with --yes", async (t) => {
    const dir = tempDir(t);
    const store = join(dir, "store");
    for (let i = 1; i <= 3; i++) {
      writeImage(join(dir, `v${i}`), [500_000]);
      await inetbootOk(["pack", join(dir, `v${i}`), "--store", store, "--name", "img"]);
    }
    const count = chunkFiles(store).length;
    const dry = JSON.parse(
      (await inetbootOk(["gc", "--store", store, "--keep", "1", "--grace", "0", "--json"])).stdout,
    ) as {
      releases: string[];
      chunks: string[];
      deleted: boolean;
    };
    assert.deepEqual(dry.releases.sort(), ["releases/img/1.json", "releases/img/2.json"]);
    assert.ok(dry.chunks.length > 0);
    assert.equal(chunkFiles(store).length, count, "a dry run deletes nothing");

    const grace = JSON.parse(
      (await inetbootOk(["gc", "--store", store, "--keep", "1", "--json"])).stdout,
    ) as { chunks: string[]; recentKept: number };
    assert.equal(grace.chunks.length, 0, "fresh chunks are inside the grace period");
    assert.equal(grace.recentKept, dry.chunks.length);

    await inetbootOk(["gc", "--store", store, "--keep", "1", "--grace", "0", "--yes"]);
    assert.equal(chunkFiles(store).length, count - dry.chunks.length);
    const ls = JSON.parse((await inetbootOk(["ls", "--store", store, "--json"])).stdout) as {
      revision: number;
    }[];
    assert.deepEqual(
      ls.map((r) => r.revision),
      [3],
    );
    await inetbootOk(["verify", "--store", store]);
    await inetbootOk([
      "extract",
      "img",
      join(dir, "o"),
      "--store",
      store,
      "--insecure",
      "--state",
      join(dir, "s"),
    ]);
    assert.ok(readFileSync(join(dir, "o")).equals(readFileSync(join(dir, "v3"))));
  });
});
