// A per-machine disk across a new release: the machine's copy-on-write blocks were written over
// release 1, so after release 2 is published (and the server restarted) the machine keeps
// booting release 1 with its writes, while new machines get release 2; resetting its disk moves
// it to release 2. Read and written over the real NBD protocol by qemu-io, in process.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { inetbootOk, requireTool, run, tempDir, writeImage } from "./helpers.ts";

const MAC = "52:54:00:00:44:01";
const OTHER = "52:54:00:00:44:02";
const TOKEN = "reset-token-for-tests";

/** Starts a server on loopback; returns its base URL (stopped after the test or on demand). */
async function start(
  t: TestContext,
  dir: string,
  store: string,
  recheck = 3600,
): Promise<BootServer> {
  const config = parseConfig(
    `http: { port: 0, address: 127.0.0.1 }
nbd: { port: 0 }
state: ${join(dir, "state")}
ui: { write: true, token: ${TOKEN} }
entries:
  img:
    image: { name: tiny, store: ${store}, trust: [${join(dir, "k.pub")}], recheck: ${recheck} }
    kernel: /vmlinuz
    disk: per-machine
default: img
`,
    join(dir, "serve.yaml"),
  );
  const srv = new BootServer(config);
  await srv.start();
  t.after(() => srv.stop());
  return srv;
}

/** The machine's plan, and the NBD URI of its disk from the plan's nbdroot=. */
async function plan(srv: BootServer, mac: string): Promise<{ script: string; uri: string }> {
  const script = await (
    await fetch(`http://127.0.0.1:${srv.httpPort}/ipxe/boot?mac=${mac}`)
  ).text();
  const m = /nbdroot=([\d.]+):(\d+)\/(\S+)/.exec(script);
  assert.ok(m, script);
  return { script, uri: `nbd://${m[1]}:${m[2]}/${m[3]}` };
}

/** qemu-io over NBD: `read -P` checks a pattern, `write -P` writes one. */
async function qemuIo(uri: string, command: string): Promise<string> {
  const r = await run("qemu-io", ["-f", "raw", "-c", command, uri]);
  return r.stdout + r.stderr;
}

const pattern = async (uri: string, byte: number, offset: string): Promise<boolean> => {
  const out = await qemuIo(uri, `read -P ${byte} ${offset} 64k`);
  return /read 65536\/65536 bytes/.test(out) && !/verification failed/i.test(out);
};

/** A store with release 1 of "tiny" (first MiB 7s) and a way to publish the next. */
async function tinyStore(
  dir: string,
): Promise<{ store: string; publish: (byte: number) => Promise<unknown> }> {
  const disk = join(dir, "disk.img");
  const store = join(dir, "store");
  await inetbootOk(["keygen", "--out", join(dir, "k")]);
  const publish = (byte: number): Promise<unknown> => {
    writeImage(disk, [Buffer.alloc(1 << 20, byte), { zero: 3 << 20 }]);
    return inetbootOk(["pack", disk, "--store", store, "--name", "tiny", "--key", join(dir, "k")]);
  };
  await publish(7);
  return { store, publish };
}

describe("per-machine disks across releases", () => {
  it("a machine stays on the release its disk was made on, with its writes; a reset moves it to the new one", async (t) => {
    if (!requireTool(t, "qemu-io", "qemu-utils")) return;
    const dir = tempDir(t);
    const { store, publish } = await tinyStore(dir);

    let srv = await start(t, dir, store);
    let disk1 = await plan(srv, MAC);
    assert.ok(await pattern(disk1.uri, 7, "0"), "release 1 is read");
    assert.match(await qemuIo(disk1.uri, "write -P 0x57 2M 64k"), /wrote 65536\/65536 bytes/);
    const overlay = join(dir, "state", "overlays", "img", `${MAC.replace(/:/g, "-")}.cow`);
    assert.ok(existsSync(`${overlay}.release.json`), "the disk records its release");
    await srv.stop();

    // Release 2 changes the first MiB; a restarted server opens it for the entry.
    await publish(8);
    srv = await start(t, dir, store);
    const other = await plan(srv, OTHER);
    assert.ok(await pattern(other.uri, 8, "0"), "a new machine gets release 2");
    disk1 = await plan(srv, MAC);
    assert.ok(await pattern(disk1.uri, 7, "0"), "the machine stays on release 1");
    assert.ok(await pattern(disk1.uri, 0x57, "2M"), "with what it wrote");
    const events = (await (
      await fetch(`http://127.0.0.1:${srv.httpPort}/api/events?mac=${MAC}`)
    ).json()) as { stage: string; detail?: string }[];
    assert.ok(
      events.some(
        (e) =>
          e.stage === "nbd-export" &&
          /its disk stays on tiny@1, where it was made/.test(e.detail ?? ""),
      ),
      JSON.stringify(events),
    );

    const page = await (
      await fetch(`http://127.0.0.1:${srv.httpPort}/ui/machines/${encodeURIComponent(MAC)}`)
    ).text();
    assert.match(
      page,
      /Its disk was made on <code>tiny@1<\/code>, so it keeps booting that release/,
    );

    // Reset from the dashboard: the next boot is on release 2 with a fresh disk.
    const reset = await fetch(
      `http://127.0.0.1:${srv.httpPort}/ui/machines/${encodeURIComponent(MAC)}/reset-disk`,
      {
        method: "POST",
        body: new URLSearchParams({ entry: "img", token: TOKEN }),
        redirect: "manual",
      },
    );
    assert.ok(reset.status === 303 || reset.status === 302, `reset: ${reset.status}`);
    assert.ok(!existsSync(`${overlay}.release.json`));
    disk1 = await plan(srv, MAC);
    assert.ok(await pattern(disk1.uri, 8, "0"), "after the reset: release 2");
    assert.ok(await pattern(disk1.uri, 0, "2M"), "and a fresh disk");
  });

  it("a running server follows a new release: the next boot gets it, a disk made on the old one stays there", async (t) => {
    if (!requireTool(t, "qemu-io", "qemu-utils")) return;
    const dir = tempDir(t);
    const { store, publish } = await tinyStore(dir);
    const srv = await start(t, dir, store, 0); // look for a newer release at every plan
    const disk1 = await plan(srv, MAC);
    assert.ok(await pattern(disk1.uri, 7, "0"));
    assert.match(await qemuIo(disk1.uri, "write -P 0x57 2M 64k"), /wrote 65536\/65536 bytes/);

    await publish(8); // no restart
    const fresh = await plan(srv, OTHER);
    assert.ok(await pattern(fresh.uri, 8, "0"), "the next boot gets release 2");
    const images = (await (await fetch(`http://127.0.0.1:${srv.httpPort}/api/images`)).json()) as {
      entry: string;
      image: string;
    }[];
    assert.equal(images.find((i) => i.entry === "img")?.image, "tiny@2");
    const metrics = await (await fetch(`http://127.0.0.1:${srv.httpPort}/metrics`)).text();
    assert.match(metrics, /^inetboot_image_release_changes_total\{entry="img"\} 1$/m);
    // The machine whose disk was made on release 1 stays there, with its write.
    const again = await plan(srv, MAC);
    assert.ok(await pattern(again.uri, 7, "0"), "its disk stays on release 1");
    assert.ok(await pattern(again.uri, 0x57, "2M"));
  });
});
