// Boot profiles and boot packs: `inetboot optimize` publishes a profile and a pack as the next
// signed revision; a client opening that release from nginx fetches the boot set with a few
// Range requests, verifies every chunk, caches it, and reads no chunk file for it. A tampered
// pack never reaches the reader: its chunks come one by one from the store instead.
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { openDeviceStack } from "../src/block/open-stack.ts";
import { readReleaseProfile } from "../src/store/profile.ts";
import { sha256Hex } from "../src/store/chunks.ts";
import { ReleaseError } from "../src/store/errors.ts";
import { LocalStore } from "../src/store/local-store.ts";
import { decodeProfile, encodeProfile, ProfileFormatError } from "../src/store/profile.ts";
import { decodePackTable, packPath, packTableBytes, profilePath } from "../src/store/boot-pack.ts";
import { decodeBlobIndex } from "../src/store/caibx.ts";
import { isPiece } from "../src/block/pack-fetcher.ts";
import { coveredBytes } from "../src/store/optimize.ts";
import { decodeRelease } from "../src/store/release.ts";
import {
  inetboot,
  inetbootOk,
  requireTool,
  run,
  tempDir,
  textLike,
  writeImage,
} from "./helpers.ts";
import { accessLogRequests, startNginx } from "./nginx.ts";

const MiB = 1024 * 1024;

/** An 8 MiB image in a signed store, a profile of scattered regions, and `optimize` run on it. */
async function optimizedStore(
  dir: string,
): Promise<{ data: Buffer; store: string; key: string; profile: string }> {
  const image = join(dir, "disk.img");
  const data = writeImage(image, [
    textLike(3 * MiB, 7),
    2 * MiB,
    { zero: MiB },
    textLike(2 * MiB, 9),
  ]);
  const key = join(dir, "k");
  const store = join(dir, "store");
  await inetbootOk(["keygen", "--out", key]);
  await inetbootOk(["pack", image, "--store", store, "--name", "disk", "--key", key]);
  const profile = join(dir, "boot.profile");
  const regions = [
    { offset: 5 * MiB + 4096, length: 65536, ms: 1 },
    { offset: 0, length: 8192, ms: 2 },
    { offset: 3 * MiB + 100 * 1024, length: 300 * 1024, ms: 5 },
    { offset: 6 * MiB + 12288, length: 4096, ms: 9 },
    { offset: 7 * MiB, length: 512 * 1024, ms: 12 },
  ];
  writeFileSync(profile, encodeProfile(regions));
  return { data, store, key, profile };
}

describe("boot profiles and boot packs", () => {
  it("optimize publishes profile + pack as the next signed revision; minisign verifies it", async (t) => {
    const dir = tempDir(t);
    const { data, store, key, profile } = await optimizedStore(dir);
    const r = await inetbootOk([
      "optimize",
      "disk",
      "--profile",
      profile,
      "--store",
      store,
      "--key",
      key,
      "--json",
    ]);
    const result = JSON.parse(r.stdout) as {
      revision: number;
      baseRevision: number;
      pack: { chunks: number; digest: string };
      profileBytes: number;
      packChunkBytes: number;
      packPieces: number;
    };
    assert.equal(result.baseRevision, 1);
    assert.equal(result.revision, 2);
    const relPath = join(store, "releases/disk/2.json");
    const release = decodeRelease(readFileSync(relPath), relPath);
    const first = decodeRelease(readFileSync(join(store, "releases/disk/1.json")), "1.json");
    assert.equal(release.index, first.index, "same disk, same index");
    assert.ok(release.profile && release.pack);
    assert.equal(release.parent?.revision, 1);
    // The profile stored is the one given, named by its digest.
    const stored = readFileSync(join(store, `profiles/${release.profile}.profile`), "utf8");
    assert.deepEqual(decodeProfile(stored), decodeProfile(readFileSync(profile, "utf8")));
    const pack = readFileSync(join(store, packPath(release.pack.digest)));
    assert.equal(pack.length, release.pack.size);
    const entries = decodePackTable(
      pack.subarray(0, packTableBytes(release.pack)),
      release.pack,
      "pack",
    );
    assert.equal(release.pack.format, 2, "entries placed in the image");
    assert.ok(entries.length >= 5, `${entries.length} entries in the pack`);
    // Pieces: the small regions are cut out of their chunks, each named by its own bytes.
    const index = decodeBlobIndex(readFileSync(join(store, `indexes/${release.index}.caibx`)));
    const pieces = entries.filter((e) => isPiece(index, e));
    assert.equal(pieces.length, result.packPieces);
    assert.ok(pieces.length >= 2, `${pieces.length} pieces`);
    for (const p of pieces) {
      assert.equal(p.id, sha256Hex(data.subarray(p.at!, p.at! + p.size)), `piece at ${p.at}`);
    }
    // First-access order: the profile's first region (5 MiB + 4 KiB) comes first.
    assert.ok(
      entries[0].at! <= 5 * MiB + 4096 && entries[0].at! + entries[0].size > 5 * MiB + 4096,
    );
    // Occupancy if the boot repeats: the pack holds little the boot does not read.
    const regions = decodeProfile(readFileSync(profile, "utf8"));
    assert.equal(result.profileBytes, coveredBytes(regions));
    assert.ok(
      result.profileBytes / result.packChunkBytes >= 0.9,
      `${result.profileBytes} read of ${result.packChunkBytes} packed`,
    );
    if (requireTool(t, "minisign", "minisign")) {
      const v = await run("minisign", ["-V", "-p", `${key}.pub`, "-m", relPath]);
      assert.equal(v.code, 0, v.stderr + v.stdout);
    }
    // gc keeps the pack and profile a kept release names, and drops them once none does.
    const gc = async (): Promise<{ packs: string[] }> =>
      JSON.parse(
        (await inetbootOk(["gc", "--store", store, "--keep", "1", "--grace", "0", "--json"]))
          .stdout,
      ) as { packs: string[] };
    assert.deepEqual((await gc()).packs, []);
    await inetbootOk(["pack", join(dir, "disk.img"), "--store", store, "--name", "disk"]);
    assert.deepEqual(
      (await gc()).packs.sort(),
      [packPath(release.pack.digest), `profiles/${release.profile}.profile`].sort(),
    );

    // A profile recorded for another (larger) image is refused with the reason.
    const wrong = join(dir, "wrong.profile");
    writeFileSync(wrong, encodeProfile([{ offset: 64 * MiB, length: 4096, ms: 0 }]));
    const bad = await inetboot(["optimize", "disk", "--profile", wrong, "--store", store]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /recorded for another image/);
  });

  it("a client fetches the boot set as a few Range requests of the pack, verified and cached", async (t) => {
    const dir = tempDir(t);
    const { data, store, key, profile } = await optimizedStore(dir);
    await inetbootOk(["optimize", "disk", "--profile", profile, "--store", store, "--key", key]);
    const web = join(dir, "web");
    cpSync(store, web, { recursive: true });
    const nginx = await startNginx(t, web);
    if (!nginx) return;
    const cache = join(dir, "cache");
    const stack = await openDeviceStack("disk", {
      stores: [nginx.url],
      cache,
      policy: { trusted: [], insecure: true, statePath: null },
    });
    assert.ok(stack.pack, "the release's pack is used");
    assert.match(String(stack.profileSource), /published with the release/);
    for (let i = 0; i < 200 && !stack.pack.finished; i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.ok(stack.pack.finished);
    assert.equal(stack.pack.failed, 0);
    assert.equal(stack.pack.delivered, stack.pack.chunks);
    await stack.cache?.drain();
    const regions = decodeProfile(readFileSync(profile, "utf8"));
    for (const r of regions) {
      const got = await stack.device.read(r.offset, r.length);
      assert.ok(got.equals(data.subarray(r.offset, r.offset + r.length)), `region at ${r.offset}`);
    }
    const requests = accessLogRequests(nginx.accessLog);
    const packGets = requests.filter((q) => q.path.includes("/packs/"));
    assert.ok(packGets.length >= 2 && packGets.length <= 4, `${packGets.length} pack requests`);
    assert.ok(
      packGets.every((q) => q.status === 206),
      "Range requests",
    );
    assert.equal(
      requests.filter((q) => q.path.endsWith(".cacnk")).length,
      0,
      "no chunk file was read for the boot set",
    );
    // What was fetched is what the boot reads, not the whole chunks around it.
    const read = coveredBytes(regions);
    assert.ok(read / stack.pack.deliveredBytes >= 0.9, `${read} of ${stack.pack.deliveredBytes}`);
    // Reads across pieces, their chunks and the rest of the image: the image's bytes.
    for (const [offset, length] of [
      [0, data.length],
      [5 * MiB, 200 * 1024],
      [3 * MiB + 90 * 1024, 400 * 1024],
    ]) {
      const got = await stack.device.read(offset, length);
      assert.ok(got.equals(data.subarray(offset, offset + length)), `read at ${offset}`);
    }
    await stack.close();

    // Offline from the same cache (a cold-booted machine's next boot): the pieces and the
    // pack's table come from the cache, and nothing else is needed for the boot set.
    const cold = join(dir, "cache-boot-only");
    const once = await openDeviceStack("disk", {
      stores: [nginx.url],
      cache: cold,
      policy: { trusted: [], insecure: true, statePath: null },
    });
    for (let i = 0; i < 200 && !once.pack?.finished; i++)
      await new Promise((r) => setTimeout(r, 50));
    for (const r of regions) await once.device.read(r.offset, r.length);
    await once.cache?.drain();
    await once.close();
    const offline = await openDeviceStack("disk", {
      cache: cold,
      offline: true,
      policy: { trusted: [], insecure: true, statePath: null },
    });
    for (const r of regions) {
      const got = await offline.device.read(r.offset, r.length);
      assert.ok(got.equals(data.subarray(r.offset, r.offset + r.length)), `offline ${r.offset}`);
    }
    await offline.close();

    // Warm: everything is cached, so the pack is not fetched again.
    const before = accessLogRequests(nginx.accessLog).length;
    const warm = await openDeviceStack("disk", {
      stores: [nginx.url],
      cache,
      policy: { trusted: [], insecure: true, statePath: null },
    });
    for (let i = 0; i < 200 && !warm.pack?.finished; i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.equal(warm.pack?.wanted, 0);
    const after = accessLogRequests(nginx.accessLog).slice(before);
    assert.equal(after.filter((q) => q.path.includes("/packs/")).length, 1, "only the table");
    assert.equal(
      after.filter((q) => q.path.includes("/indexes/")).length,
      0,
      "the index comes from the cache",
    );
    await warm.close();
  });

  it("a tampered pack never reaches the reader: its chunks are read one by one instead", async (t) => {
    const dir = tempDir(t);
    const { data, store, key, profile } = await optimizedStore(dir);
    await inetbootOk(["optimize", "disk", "--profile", profile, "--store", store, "--key", key]);
    const release = decodeRelease(readFileSync(join(store, "releases/disk/2.json")), "2.json");
    assert.ok(release.pack);
    for (const damage of ["frame", "table"] as const) {
      const web = join(dir, `web-${damage}`);
      cpSync(store, web, { recursive: true });
      const packFile = join(web, packPath(release.pack.digest));
      const bytes = readFileSync(packFile);
      const at = damage === "table" ? 20 : packTableBytes(release.pack) + 40;
      bytes[at] ^= 0xff;
      writeFileSync(packFile, bytes);
      const nginx = await startNginx(t, web);
      if (!nginx) return;
      const stack = await openDeviceStack("disk", {
        stores: [nginx.url],
        cache: join(dir, `cache-${damage}`),
        policy: { trusted: [], insecure: true, statePath: null },
      });
      for (let i = 0; i < 200 && !stack.pack?.finished; i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.ok((stack.pack?.failed ?? 0) >= 1, `${damage}: the damage was noticed`);
      for (const r of decodeProfile(readFileSync(profile, "utf8"))) {
        const got = await stack.device.read(r.offset, r.length);
        assert.ok(
          got.equals(data.subarray(r.offset, r.offset + r.length)),
          `${damage}: region at ${r.offset}`,
        );
      }
      const chunkGets = accessLogRequests(nginx.accessLog).filter((q) => q.path.endsWith(".cacnk"));
      assert.ok(chunkGets.length >= 1, `${damage}: the damaged chunks came from the store`);
      await stack.close();
    }
  });

  it("verify checks each boot pack whole (digest, table, every entry) and each profile, over a folder and HTTP", async (t) => {
    const dir = tempDir(t);
    const { store, key, profile } = await optimizedStore(dir);
    await inetbootOk(["optimize", "disk", "--profile", profile, "--store", store, "--key", key]);
    const release = decodeRelease(readFileSync(join(store, "releases/disk/2.json")), "2.json");
    assert.ok(release.pack && release.profile);
    const good = (await inetbootOk(["verify", "--store", store])).stdout;
    assert.match(
      good,
      new RegExp(`disk@2: boot pack and profile OK \\(${release.pack.chunks} entries\\)`),
    );
    const nginx = await startNginx(t, store);
    if (nginx) {
      const overHttp = await inetbootOk(["verify", "--store", nginx.url]);
      assert.match(overHttp.stdout, /boot pack and profile OK/);
    }

    const table = packTableBytes(release.pack);
    const hit = table + 40;
    const victim = decodePackTable(
      readFileSync(join(store, packPath(release.pack.digest))).subarray(0, table),
      release.pack,
      "pack",
    ).find((e) => e.offset <= hit && hit < e.offset + e.length)!;
    const damages: [string, (copy: string) => void, RegExp[]][] = [
      [
        "a flipped byte in an entry",
        (copy) => flip(join(copy, packPath(release.pack!.digest)), hit),
        [
          new RegExp(`BAD PACK disk@2.*Chunk ${victim.id} is corrupt`),
          /its SHA-256 is [0-9a-f]{64}, the release signs/,
        ],
      ],
      [
        "a flipped byte in the table",
        (copy) => flip(join(copy, packPath(release.pack!.digest)), 20),
        [/BAD PACK disk@2.*table does not match the digest the release signs/],
      ],
      [
        "the pack gone",
        (copy) => rmSync(join(copy, packPath(release.pack!.digest))),
        [/BAD PACK disk@2.*is missing \(clients read its chunks one by one\)/],
      ],
      [
        "the profile replaced",
        (copy) => writeFileSync(join(copy, profilePath(release.profile!)), encodeProfile([])),
        [new RegExp(`BAD PACK disk@2.*expected ${release.profile}`)],
      ],
    ];
    for (const [what, damage, expected] of damages) {
      const copy = join(dir, what.replaceAll(" ", "-"));
      cpSync(store, copy, { recursive: true });
      damage(copy);
      const r = await inetboot(["verify", "--store", copy]);
      assert.notEqual(r.code, 0, `${what}: verify fails`);
      assert.match(r.stdout, /FAILED/, what);
      for (const re of expected) assert.match(r.stdout, re, what);
    }
  });

  it("a release's missing boot profile is skipped; a damaged one stops the open, naming the file", async (t) => {
    const dir = tempDir(t);
    const { store, key, profile } = await optimizedStore(dir);
    await inetbootOk(["optimize", "disk", "--profile", profile, "--store", store, "--key", key]);
    const release = decodeRelease(readFileSync(join(store, "releases/disk/2.json")), "2.json");
    assert.ok(release.profile);
    const policy = { trusted: [], insecure: true, statePath: null };

    const missing = join(dir, "missing");
    cpSync(store, missing, { recursive: true });
    rmSync(join(missing, profilePath(release.profile)));
    const stack = await openDeviceStack("disk", { stores: [missing], policy });
    assert.equal(stack.profileSource, null, "opened without a profile");
    await stack.close();

    const damaged = join(dir, "damaged");
    cpSync(store, damaged, { recursive: true });
    const file = join(damaged, profilePath(release.profile));
    writeFileSync(file, encodeProfile([{ offset: 0, length: 4096, ms: 1 }]));
    await assert.rejects(
      openDeviceStack("disk", { stores: [damaged], policy }),
      (err: Error) =>
        err instanceof ReleaseError &&
        err.message.includes(file) &&
        err.message.includes(`expected ${release.profile}`),
    );
  });

  it("a profile that matches its digest but is not a profile is a ProfileFormatError naming it", async (t) => {
    const dir = tempDir(t);
    const text = "inetboot-profile 1\n0 4096\n";
    const digest = sha256Hex(Buffer.from(text));
    mkdirSync(join(dir, "profiles"));
    writeFileSync(join(dir, profilePath(digest)), text);
    const store = new LocalStore(dir);
    await assert.rejects(
      readReleaseProfile(store, digest),
      (err: Error) =>
        err instanceof ProfileFormatError &&
        err.message.includes(join(dir, profilePath(digest))) &&
        err.message.includes("line 2"),
    );
    assert.equal(await readReleaseProfile(store, "0".repeat(64)), null, "a missing one is null");
  });
});

function flip(file: string, at: number): void {
  const bytes = readFileSync(file);
  bytes[at] ^= 0xff;
  writeFileSync(file, bytes);
}
