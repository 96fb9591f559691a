// Interop with the real casync (Debian package) and a real nginx as the origin.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  inetboot,
  inetbootOk,
  requireTool,
  run,
  tempDir,
  textLike,
  writeImage,
} from "./helpers.ts";
import { startNginx } from "./nginx.ts";

function onlyIndex(store: string): string {
  return join(
    store,
    "indexes",
    readdirSync(join(store, "indexes")).find((f) => f.endsWith(".caibx"))!,
  );
}

async function casyncOk(args: string[]): Promise<void> {
  const r = await run("casync", args);
  assert.equal(r.code, 0, `casync ${args.join(" ")} failed: ${r.stderr}`);
}

describe("casync interop", () => {
  it("casync extracts an image inetboot packed, from the directory and from nginx", async (t) => {
    if (!requireTool(t, "casync", "casync")) return;
    const dir = tempDir(t);
    const store = join(dir, "store");
    const data = writeImage(join(dir, "image"), [
      textLike(2_000_000),
      { zero: 1_500_000 },
      777_777,
      { zero: 70_000 },
      3,
    ]);
    await inetbootOk(["pack", join(dir, "image"), "--store", store, "--name", "img"]);
    const index = onlyIndex(store);

    await casyncOk(["extract", `--store=${join(store, "chunks")}`, index, join(dir, "from-dir")]);
    assert.ok(
      readFileSync(join(dir, "from-dir")).equals(data),
      "casync extract from the directory differs",
    );

    const nginx = await startNginx(t, dir);
    if (!nginx) return;
    await casyncOk(["extract", `--store=${nginx.url}store/chunks/`, index, join(dir, "from-http")]);
    assert.ok(
      readFileSync(join(dir, "from-http")).equals(data),
      "casync extract over HTTP differs",
    );
  });

  it("inetboot extracts what casync make --digest=sha256 packed, and cuts identical chunks", async (t) => {
    if (!requireTool(t, "casync", "casync")) return;
    const dir = tempDir(t);
    const data = writeImage(join(dir, "image"), [
      textLike(3_000_000, 9),
      { zero: 900_000 },
      1_234_567,
    ]);
    const cstore = join(dir, "cstore");
    await casyncOk([
      "make",
      "--digest=sha256",
      `--store=${cstore}`,
      join(dir, "c.caibx"),
      join(dir, "image"),
    ]);

    // casync's index carries no signature: reading it is an explicit --insecure.
    const refused = await inetboot([
      "extract",
      join(dir, "c.caibx"),
      join(dir, "out"),
      "--store",
      cstore,
    ]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /--insecure/);
    await inetbootOk([
      "extract",
      join(dir, "c.caibx"),
      join(dir, "out"),
      "--store",
      cstore,
      "--insecure",
    ]);
    assert.ok(readFileSync(join(dir, "out")).equals(data));

    const nginx = await startNginx(t, dir);
    if (!nginx) return;
    await inetbootOk([
      "extract",
      join(dir, "c.caibx"),
      join(dir, "out2"),
      "--store",
      `${nginx.url}cstore`,
      "--insecure",
    ]);
    assert.ok(readFileSync(join(dir, "out2")).equals(data));

    // Same chunker, same table, same parameters: the indexes are the same bytes.
    const store = join(dir, "store");
    await inetbootOk(["pack", join(dir, "image"), "--store", store, "--name", "img"]);
    assert.ok(
      readFileSync(onlyIndex(store)).equals(readFileSync(join(dir, "c.caibx"))),
      "index differs from casync's",
    );
  });

  it("a signed store served by nginx: ls, verify, diff and extract over HTTP", async (t) => {
    const dir = tempDir(t);
    const store = join(dir, "store");
    const key = join(dir, "k");
    await inetbootOk(["keygen", "--out", key]);
    const v1 = textLike(2_500_000, 5);
    const v2 = Buffer.concat([
      v1.subarray(0, 2_000_000),
      textLike(100_000, 6),
      v1.subarray(2_000_000),
    ]);
    writeImage(join(dir, "v1"), [v1]);
    writeImage(join(dir, "v2"), [v2]);
    await inetbootOk(["pack", join(dir, "v1"), "--store", store, "--name", "os", "--key", key]);
    await inetbootOk(["pack", join(dir, "v2"), "--store", store, "--name", "os", "--key", key]);
    const nginx = await startNginx(t, dir);
    if (!nginx) return;
    const url = `${nginx.url}store`;
    const trust = ["--trust", `${key}.pub`];

    const ls = JSON.parse(
      (await inetbootOk(["ls", "--store", url, ...trust, "--json"])).stdout,
    ) as { revision: number; verified: boolean }[];
    assert.deepEqual(
      ls.map((r) => [r.revision, r.verified]),
      [
        [1, true],
        [2, true],
      ],
    );
    await inetbootOk(["verify", "--store", url, ...trust]);
    const diff = JSON.parse(
      (await inetbootOk(["diff", "os@1", "os@2", "--store", url, ...trust, "--json"])).stdout,
    ) as { fetchChunks: number; fetchStoredBytes: number };
    assert.ok(
      diff.fetchChunks >= 1 && diff.fetchChunks <= 4,
      `diff says ${diff.fetchChunks} chunks`,
    );
    assert.ok(diff.fetchStoredBytes > 0);

    const state = join(dir, "state.json");
    await inetbootOk([
      "extract",
      "os",
      join(dir, "out"),
      "--store",
      url,
      ...trust,
      "--state",
      state,
    ]);
    assert.ok(readFileSync(join(dir, "out")).equals(v2));
    await inetbootOk([
      "extract",
      `${url}/releases/os/1.json`,
      join(dir, "out1"),
      ...trust,
      "--state",
      join(dir, "s2"),
    ]);
    assert.ok(readFileSync(join(dir, "out1")).equals(v1));

    // minisign checks our releases as published.
    if (requireTool(t, "minisign", "minisign")) {
      const r = await run("minisign", [
        "-V",
        "-p",
        `${key}.pub`,
        "-m",
        join(store, "releases/os/2.json"),
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Signature and comment signature verified/);
      assert.match(r.stdout, /image:os\trevision:2/);
    }
  });
});
