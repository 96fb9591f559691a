// Memory stays flat whatever the image size: a 20 GiB (sparse) image packs in under 512 MB.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { closeSync, ftruncateSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { inetbootOk, tempDir } from "./helpers.ts";

it("packs a 20 GiB image with peak RSS under 512 MB, and the index covers it all", async (t) => {
  const dir = tempDir(t);
  const image = join(dir, "big.img");
  const size = 20 * 1024 ** 3;
  const fd = openSync(image, "w");
  // Sparse: 4 MiB of random data every GiB, zeros elsewhere (what a fresh disk image looks like).
  for (let g = 0; g < 20; g++)
    writeSync(fd, randomBytes(4 << 20), 0, 4 << 20, g * 1024 ** 3 + 12345);
  ftruncateSync(fd, size);
  closeSync(fd);
  assert.equal(statSync(image).size, size);

  const store = join(dir, "store");
  const r = await inetbootOk(["pack", image, "--store", store, "--name", "big", "--json"]);
  const s = JSON.parse(r.stdout) as {
    size: number;
    peakRssBytes: number;
    newChunks: number;
    zeroChunks: number;
    releasePath: string;
  };
  assert.equal(s.size, size);
  assert.ok(
    s.peakRssBytes < 512 * 1024 ** 2,
    `peak RSS ${(s.peakRssBytes / 1024 ** 2).toFixed(0)} MB`,
  );
  assert.ok(s.zeroChunks > 70_000, `${s.zeroChunks} zero chunks`);
  const release = JSON.parse(readFileSync(s.releasePath, "utf8")) as { size: number };
  assert.equal(release.size, size);
});
