// Faults: bad mirrors, a killed server under write load, the cache quota, dead origins.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { BlockIoError } from "../src/block/block-device.ts";
import { ChunkedDevice } from "../src/block/chunked-device.ts";
import { MirrorSet } from "../src/block/mirror-set.ts";
import { openImage } from "../src/store/source.ts";
import { openStore } from "../src/store/open-store.ts";
import { startAttach } from "./attach.ts";
import { startFaultyOrigin } from "./faulty-origin.ts";
import type { FaultMode } from "./faulty-origin.ts";
import { CLI, inetbootOk, requireTool, run, tempDir, textLike } from "./helpers.ts";
import { TestNbdClient } from "./nbd-client.ts";
import { startNginx } from "./nginx.ts";

async function packed(
  t: TestContext,
  size = 3_000_000,
): Promise<{ dir: string; store: string; data: Buffer }> {
  const dir = tempDir(t);
  const data = Buffer.concat([textLike(size - 500_000, 21), Buffer.alloc(500_000)]);
  writeFileSync(join(dir, "disk.img"), data);
  const store = join(dir, "store");
  await inetbootOk(["pack", join(dir, "disk.img"), "--store", store, "--name", "disk"]);
  return { dir, store, data };
}

const insecure = { trusted: [], insecure: true, statePath: null };

describe("mirror faults never turn into wrong data", () => {
  const modes: FaultMode[] = ["corrupt", "error500", "truncated", "stall", "cut"];
  for (const mode of modes) {
    it(`${mode}: reads fail over to the healthy mirror; with no healthy mirror they fail`, async (t) => {
      const p = await packed(t);
      const nginx = await startNginx(t, p.dir);
      if (!nginx) return;
      const bad = await startFaultyOrigin(t, p.dir, mode);
      const image = await openImage("disk", { store: `${nginx.url}store`, policy: insecure });
      // One attempt per request: failing over is the mirror set's job, not the reader's.
      const sources = [`${bad.url}store`, `${nginx.url}store`].map((s) => ({
        reader: openStore(s, { attempts: 1 }),
        prefix: "chunks/",
      }));
      // No latency probe: the bad mirror is asked first, every time it is not penalised.
      const mirrors = new MirrorSet(sources, { timeoutMs: 1000, minHedgeMs: 100, penaltyMs: 0 });
      const dev = new ChunkedDevice(image.index, mirrors, { memoryBytes: 0 });
      t.after(() => dev.close());
      const all = await dev.read(0, dev.size);
      assert.ok(all.equals(p.data), "data read through a faulty mirror differs");
      assert.ok(bad.chunkRequests() > 0, "the faulty mirror was never asked");
      const badStats = mirrors.stats[0];
      if (mode !== "stall")
        assert.ok(badStats.failures > 0, `no failure recorded: ${JSON.stringify(badStats)}`);
      else
        assert.ok(
          badStats.hedges + mirrors.stats[1].hedges > 0,
          "a stalled mirror must trigger a hedged request",
        );

      const onlyBad = new MirrorSet(
        [{ reader: openStore(`${bad.url}store`, { attempts: 1 }), prefix: "chunks/" }],
        { timeoutMs: 500, rounds: 1 },
      );
      const badDev = new ChunkedDevice(image.index, onlyBad, { memoryBytes: 0 });
      t.after(() => badDev.close());
      await assert.rejects(badDev.read(0, 100_000), BlockIoError);
      await image.close();
    });
  }

  it("end to end: nbdcopy through attach with a corrupting mirror first is byte-exact; alone it fails", async (t) => {
    if (!requireTool(t, "nbdcopy", "libnbd-bin")) return;
    const p = await packed(t);
    const nginx = await startNginx(t, p.dir);
    if (!nginx) return;
    const bad = await startFaultyOrigin(t, p.dir, "corrupt");
    const state = join(p.dir, "s.json");
    const a = await startAttach(t, [
      "disk",
      "--store",
      `${bad.url}store`,
      "--store",
      `${nginx.url}store`,
      "--insecure",
      "--state",
      state,
      "--listen",
      `unix:${join(p.dir, "a.sock")}`,
    ]);
    const copy = await run("nbdcopy", [a.uri, join(p.dir, "out")]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.ok(readFileSync(join(p.dir, "out")).equals(p.data));
    await a.stop();

    const b = await startAttach(t, [
      "disk",
      "--store",
      `${bad.url}store`,
      "--insecure",
      "--state",
      state,
      "--listen",
      `unix:${join(p.dir, "b.sock")}`,
    ]);
    const failed = await run("nbdcopy", [b.uri, join(p.dir, "bad-out")]);
    assert.notEqual(failed.code, 0, "a copy from a corrupting-only mirror must fail");
    assert.match(failed.stderr, /Input\/output error|EIO|error/i);
    assert.match(b.stderr(), /is corrupt/);
  });
});

describe("durability and the cache", () => {
  it("a SIGKILL during a write load loses no write acknowledged before a FLUSH", async (t) => {
    const dir = tempDir(t);
    const base = join(dir, "base.img");
    const size = 16 * 1024 * 1024;
    writeFileSync(base, textLike(size, 31));
    const sock = join(dir, "nbd.sock");
    const cow = join(dir, "disk.cow");
    const args = [CLI, "attach", base, "--cow", cow, "--listen", `unix:${sock}`];
    const server = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "ignore"] });
    await new Promise<void>((r) => server.stdout.once("data", () => r()));
    const client = await TestNbdClient.connect(sock);
    assert.equal(client.size, size);

    // Slots of 64 KiB, each written with increasing generations; remember every generation.
    const SLOT = 65536;
    const history = new Map<number, Buffer[]>();
    const durable = new Map<number, number>(); // slot -> generation acknowledged before a completed FLUSH
    const acked: [number, number][] = [];
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        const batch: Promise<void>[] = [];
        for (let i = 0; i < 8; i++) {
          const slot = Math.floor(Math.random() * (size / SLOT));
          const data = randomBytes(SLOT);
          const gens = history.get(slot) ?? [];
          gens.push(data);
          history.set(slot, gens);
          const gen = gens.length - 1;
          batch.push(
            client.write(slot * SLOT, data).then((r) => {
              if (r.error === 0) acked.push([slot, gen]);
            }),
          );
        }
        await Promise.all(batch);
        const before = acked.splice(0);
        const f = await client.flush();
        if (f.error === 0)
          for (const [slot, gen] of before)
            if ((durable.get(slot) ?? -1) < gen) durable.set(slot, gen);
      }
    })().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1500));
    server.kill("SIGKILL");
    stop = true;
    await writer;
    client.close();
    assert.ok(durable.size > 10, `only ${durable.size} slots were flushed before the kill`);

    const again = await startAttach(t, [base, "--cow", cow, "--listen", `unix:${sock}`]);
    const check = await TestNbdClient.connect(sock);
    for (const [slot, gen] of durable) {
      const got = await check.readAt(slot * SLOT, SLOT);
      const later = history.get(slot)!.slice(gen);
      assert.ok(
        later.some((d) => d.equals(got)),
        `slot ${slot}: the flushed generation ${gen} (or a later one) is not on disk`,
      );
    }
    check.close();
    await again.stop();
    assert.ok(readFileSync(base).equals(textLike(size, 31)), "the base file was written");
  });

  it("the cache never exceeds its quota by more than one chunk", async (t) => {
    if (!requireTool(t, "nbdcopy", "libnbd-bin")) return;
    const p = await packed(t, 6_000_000);
    const cacheDir = join(p.dir, "cache");
    const quota = 1024 * 1024;
    const a = await startAttach(t, [
      "disk",
      "--store",
      p.store,
      "--insecure",
      "--state",
      join(p.dir, "s"),
      "--cache",
      cacheDir,
      "--cache-quota",
      "1M",
      "--listen",
      `unix:${join(p.dir, "a.sock")}`,
    ]);
    const cacheBytes = (): number => {
      let n = 0;
      const root = join(cacheDir, "chunks");
      for (const d of readdirSync(root)) {
        for (const f of readdirSync(join(root, d)))
          n += statSync(join(root, d, f), { throwIfNoEntry: false })?.size ?? 0;
      }
      return n;
    };
    const maxChunk = Math.max(
      ...readdirSync(join(p.store, "chunks")).flatMap((d) =>
        readdirSync(join(p.store, "chunks", d)).map(
          (f) => statSync(join(p.store, "chunks", d, f)).size,
        ),
      ),
    );
    let peak = 0;
    const poll = setInterval(() => (peak = Math.max(peak, cacheBytes())), 5);
    const copy = await run("nbdcopy", ["--requests=16", a.uri, join(p.dir, "out")]);
    clearInterval(poll);
    peak = Math.max(peak, cacheBytes());
    assert.equal(copy.code, 0, copy.stderr);
    assert.ok(readFileSync(join(p.dir, "out")).equals(p.data));
    assert.ok(peak > 0, "nothing was cached");
    assert.ok(
      peak <= quota + maxChunk,
      `cache reached ${peak} bytes; quota ${quota} + one chunk ${maxChunk}`,
    );
    await a.stop();
  });

  it("a cached release reads entirely with every origin down, and --offline refuses the network", async (t) => {
    if (!requireTool(t, "nbdcopy", "libnbd-bin")) return;
    const p = await packed(t);
    const nginx = await startNginx(t, p.dir);
    if (!nginx) return;
    const cacheDir = join(p.dir, "cache");
    const state = join(p.dir, "s");
    const url = `${nginx.url}store`;
    /** Attaches the image with these source flags and the shared cache; reads it all. */
    const copyThrough = async (name: string, source: string[]): Promise<void> => {
      const a = await startAttach(t, [
        "disk",
        ...source,
        "--insecure",
        "--state",
        state,
        "--cache",
        cacheDir,
        "--listen",
        `unix:${join(p.dir, `${name}.sock`)}`,
      ]);
      assert.equal((await run("nbdcopy", [a.uri, join(p.dir, name)])).code, 0);
      assert.ok(readFileSync(join(p.dir, name)).equals(p.data));
      await a.stop();
    };
    await copyThrough("warm", ["--store", url]);
    const status = JSON.parse(
      (
        await inetbootOk([
          "cache",
          "status",
          "--cache",
          cacheDir,
          "--can-boot-offline",
          "disk",
          "--json",
        ])
      ).stdout,
    ) as { offline: { canBootOffline: boolean }; misses: number };
    assert.equal(status.offline.canBootOffline, true);
    assert.ok(status.misses > 0);

    // Every origin down: the store URL now refuses connections.
    await copyThrough("cold", ["--store", "http://127.0.0.1:9/store"]);
    await copyThrough("offline", ["--offline"]);

    // A cache missing chunks says so, by count.
    const victim = readdirSync(join(cacheDir, "chunks"))[0];
    const { rmSync } = await import("node:fs");
    rmSync(join(cacheDir, "chunks", victim), { recursive: true });
    const partial = await run(process.execPath, [
      CLI,
      "cache",
      "status",
      "--cache",
      cacheDir,
      "--can-boot-offline",
      "disk",
    ]);
    assert.equal(partial.code, 1);
    assert.match(partial.stdout, /can NOT boot offline: \d+ of \d+ chunks/);
  });
});
