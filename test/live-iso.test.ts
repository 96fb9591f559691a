// ISO entries in the boot server, in process, with nginx as the origin: the recipe's script, the
// kernel and initrd extracted by Range and checked against the ISO's checksum list, the ISO and
// its files served with Range from a block cache (the origin sees each byte once), a damaged
// ISO refused with the reason, unknown layouts explained, overrides honoured.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { BootServer } from "../src/serve/boot-server.ts";
import { parseConfig } from "../src/serve/config.ts";
import { requireGpg, gpgKey } from "./gpg.ts";
import { inetboot, requireFile, tempDir, textLike } from "./helpers.ts";
import { makeIso } from "./iso-maker.ts";
import { accessLogRequests, startNginx } from "./nginx.ts";

const MAC = "52:54:00:12:34:56";
const md5 = (b: Buffer | string): string => createHash("md5").update(b).digest("hex");
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

const KERNEL = textLike(300_000, 1);
const INITRD = textLike(2_500_000, 2);
const SQUASHFS = textLike(3_000_000, 3);

function casperFiles(initrdSum = md5(INITRD)): Record<string, Buffer | string> {
  return {
    "casper/vmlinuz": KERNEL,
    "casper/initrd": INITRD,
    "casper/filesystem.squashfs": SQUASHFS,
    ".disk/info": "Test Live 24.04",
    "md5sum.txt": `${md5(KERNEL)}  ./casper/vmlinuz\n${initrdSum}  ./casper/initrd\n`,
  };
}

async function serve(t: TestContext, dir: string, entries: string): Promise<string> {
  const config = parseConfig(
    `http: { port: 0, address: 127.0.0.1 }\nnbd: { port: 0 }\nstate: ${dir}/state\n${entries}`,
    join(dir, "serve.yaml"),
  );
  const srv = new BootServer(config);
  await srv.start();
  t.after(() => srv.stop());
  return `http://127.0.0.1:${srv.httpPort}`;
}

/** The status of a GET of `url` sent exactly as written (no path normalisation). */
function rawStatus(url: string): Promise<number> {
  const u = /^http:\/\/([^:/]+):(\d+)(\/.*)$/.exec(url) as RegExpExecArray;
  return new Promise((resolve, reject) => {
    request({ host: u[1], port: Number(u[2]), path: u[3] }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .on("error", reject)
      .end();
  });
}

/** The hashes remembered as checked whole, one per cached ISO that passed. */
function verifiedMarks(dir: string): string[] {
  return readdirSync(join(dir, "cache", "iso"))
    .map((d) => join(dir, "cache", "iso", d, "verified-sha256"))
    .filter((f) => existsSync(f))
    .flatMap((f) => readFileSync(f, "utf8").trim().split("\n"));
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { headers });
}

describe("live ISO entries", () => {
  it("boots a casper ISO from a web server by range: script, verified kernel and initrd, ISO and tree with Range, each origin byte fetched once", async (t) => {
    const dir = tempDir(t);
    const iso = await makeIso(t, join(dir, "www"), casperFiles(), ["-R", "-J"], "ubuntu.iso");
    if (!iso) return;
    const nginx = await startNginx(t, join(dir, "www"));
    if (!nginx) return;
    const isoBytes = readFileSync(iso);
    const base = await serve(
      t,
      dir,
      `entries:
  ubuntu: { iso: "${nginx.url}ubuntu.iso", cmdline: "{recipe} console=ttyS0", lazy: false }
default: ubuntu
`,
    );
    const script = await (await get(`${base}/ipxe/boot?mac=${MAC}`)).text();
    const entryBase = `${base}/iso/ubuntu`;
    assert.match(script, new RegExp(`kernel ${base}/files/ubuntu/kernel\\?mac=52-54-00-12-34-56 `));
    assert.ok(
      script.includes(
        `initrd=initrd0.img boot=casper url=${entryBase}/ubuntu.iso ip=dhcp console=ttyS0`,
      ),
      script,
    );
    assert.match(script, /initrd --name initrd0.img .*\/files\/ubuntu\/initrd\/0/);

    const kernel = Buffer.from(await (await get(`${base}/files/ubuntu/kernel`)).arrayBuffer());
    assert.ok(kernel.equals(KERNEL), "kernel bytes");
    const initrd = await get(`${base}/files/ubuntu/initrd/0`);
    assert.equal(initrd.headers.get("etag"), `"${sha256(INITRD)}"`);
    assert.ok(Buffer.from(await initrd.arrayBuffer()).equals(INITRD), "initrd bytes");

    // What casper's url= fetches, with and without Range, and a file of the tree.
    const part = await get(`${entryBase}/ubuntu.iso`, { range: "bytes=40000-1300000" });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get("content-range"), `bytes 40000-1300000/${isoBytes.length}`);
    assert.ok(Buffer.from(await part.arrayBuffer()).equals(isoBytes.subarray(40000, 1300001)));
    const whole = Buffer.from(await (await get(`${entryBase}/ubuntu.iso`)).arrayBuffer());
    assert.equal(sha256(whole), sha256(isoBytes));
    const fs = await get(`${entryBase}/tree/casper/filesystem.squashfs`, { range: "bytes=-1000" });
    assert.equal(fs.status, 206);
    assert.ok(Buffer.from(await fs.arrayBuffer()).equals(SQUASHFS.subarray(-1000)));
    // (fetch would normalise the dots away; a raw request sends them as a client could)
    for (const path of [
      "tree/casper/../../etc/passwd",
      "tree/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
      "tree/..%2f..%2fetc/passwd",
    ]) {
      assert.equal(await rawStatus(`${entryBase}/${path}`), 404, path);
    }
    assert.equal((await get(`${entryBase}/tree/nothing`)).status, 404);

    // The origin saw Range requests only, and no byte twice: a second machine costs nothing.
    const isoRequests = (): ReturnType<typeof accessLogRequests> =>
      accessLogRequests(nginx.accessLog).filter((r) => r.path === "/ubuntu.iso");
    const before = isoRequests();
    assert.ok(
      before.every((r) => r.status === 206),
      JSON.stringify(before.slice(0, 5)),
    );
    const fetched = before.reduce((n, r) => n + r.bytes, 0);
    assert.ok(fetched <= isoBytes.length + 1024 * 1024, `${fetched} bytes from the origin`);
    const again = Buffer.from(await (await get(`${entryBase}/ubuntu.iso`)).arrayBuffer());
    assert.ok(again.equals(isoBytes));
    assert.equal(isoRequests().length, before.length);

    const stats = (await (await get(`${base}/api/images`)).json()) as {
      entry: string;
      family: string;
      cache: { hits: number; fetchedBytes: number };
    }[];
    const entry = stats.find((s) => s.entry === "ubuntu") as (typeof stats)[0];
    assert.equal(entry.family, "casper");
    assert.ok(entry.cache.hits > 0);
    assert.equal(entry.cache.fetchedBytes, isoBytes.length, "each byte of the ISO fetched once");
  });

  it("refuses an initrd that does not match the ISO's checksum list, with the reason", async (t) => {
    const dir = tempDir(t);
    const iso = await makeIso(t, dir, casperFiles("0".repeat(32)));
    if (!iso) return;
    const base = await serve(t, dir, `entries:\n  live: { iso: ${iso} }\ndefault: live\n`);
    assert.equal((await get(`${base}/files/live/kernel`)).status, 200);
    const res = await get(`${base}/files/live/initrd/0`);
    assert.equal(res.status, 502);
    assert.match(await res.text(), /checksum list says 0{32}: the ISO is damaged/);
  });

  it("explains unknown layouts in the iPXE script; kernel:, initrd:, cmdline: and recipe: override", async (t) => {
    const dir = tempDir(t);
    const unknown = await makeIso(
      t,
      dir,
      { "README.txt": "hi", "boot/kernel.bin": KERNEL, "boot/ramdisk": INITRD },
      ["-R", "-J"],
      "odd.iso",
    );
    if (!unknown) return;
    copyFileSync(unknown, join(dir, "odd-copy.iso"));
    const live = await makeIso(t, dir, casperFiles(), ["-R", "-J"], "live.iso");
    if (!live) return;
    const base = await serve(
      t,
      dir,
      `entries:
  odd: { iso: ${unknown} }
  custom: { iso: ${join(dir, "odd-copy.iso")}, kernel: boot/kernel.bin, initrd: /boot/ramdisk, cmdline-replace: "root=live:{file:/README.txt} iso={iso}" }
  wrong-family: { iso: ${live}, recipe: dracut }
  forced-cd: { iso: ${live}, recipe: cdrom }
default: odd
`,
    );
    // recipe: cdrom on an ISO with no El Torito record: said so, nothing to sanboot.
    const forced = await (await get(`${base}/ipxe/entry/forced-cd?mac=${MAC}`)).text();
    assert.match(forced, /no bootable El Torito record either, so it cannot boot as a CD-ROM/);
    const odd = await (await get(`${base}/ipxe/entry/odd?mac=${MAC}`)).text();
    assert.match(odd, /unknown layout: looked for casper/);
    assert.match(odd, /the ISO holds .*README\.txt/);
    assert.match(odd, /\nshell\n/);
    const custom = await (await get(`${base}/ipxe/entry/custom?mac=${MAC}`)).text();
    assert.ok(
      custom.includes(
        `root=live:${base}/iso/custom/tree/README.txt iso=${base}/iso/custom/odd-copy.iso`,
      ),
      custom,
    );
    const initrd = Buffer.from(await (await get(`${base}/files/custom/initrd/0`)).arrayBuffer());
    assert.ok(initrd.equals(INITRD));
    const wrong = await (await get(`${base}/ipxe/entry/wrong-family?mac=${MAC}`)).text();
    assert.match(wrong, /not a dracut layout/);
  });

  it("an ISO no recipe knows but with a boot record is sanbooted (recipe: cdrom forces it); it has no kernel to fetch", async (t) => {
    if (!requireFile(t, "/usr/lib/ipxe/ipxe.iso", "ipxe")) return;
    const dir = tempDir(t);
    copyFileSync("/usr/lib/ipxe/ipxe.iso", join(dir, "rescue.iso"));
    const live = await makeIso(t, dir, casperFiles(), ["-R", "-J"], "live.iso");
    if (!live) return;
    const base = await serve(
      t,
      dir,
      `entries:
  rescue: { iso: ${join(dir, "rescue.iso")}, once: true }
  not-casper: { iso: ${join(dir, "rescue.iso")}, recipe: casper }
default: rescue
`,
    );
    // once: the first plan sanboots it (and uses it up); the next boots locally.
    assert.match(await (await get(`${base}/ipxe/boot?mac=${MAC}`)).text(), /\nsanboot /);
    assert.doesNotMatch(await (await get(`${base}/ipxe/boot?mac=${MAC}`)).text(), /\nsanboot /);
    const script = await (await get(`${base}/ipxe/entry/rescue?mac=${MAC}`)).text();
    assert.match(
      script,
      new RegExp(`\nsanboot --no-describe ${base}/iso/rescue/rescue\\.iso \\|\\| goto failed\n`),
    );
    const kernel = await get(`${base}/files/rescue/kernel?mac=${MAC}`);
    assert.equal(kernel.status, 404);
    assert.match(
      await kernel.text(),
      /boots its ISO as a CD-ROM \(sanboot\): it has no kernel or initrd/,
    );
    // A family forced on it is an error, not a CD-ROM boot.
    const notCasper = await (await get(`${base}/ipxe/entry/not-casper?mac=${MAC}`)).text();
    assert.match(notCasper, /not a casper layout/);
    assert.doesNotMatch(notCasper, /sanboot/);
    // The ISO is served with Range for iPXE's SAN reads.
    const head = await get(`${base}/iso/rescue/rescue.iso`, { Range: "bytes=32768-32773" });
    assert.equal(head.status, 206);
    assert.equal(Buffer.from(await head.arrayBuffer()).toString("latin1", 1, 6), "CD001");
  });

  it("sha256: the whole ISO is checked before any machine boots it; a slow check makes iPXE wait and ask again", async (t) => {
    const dir = tempDir(t);
    const iso = await makeIso(t, join(dir, "www"), casperFiles(), ["-R", "-J"], "ubuntu.iso");
    if (!iso) return;
    const nginx = await startNginx(t, join(dir, "www"));
    if (!nginx) return;
    // The origin behind a proxy that holds every response back 2 s: opening and checking the
    // ISO takes longer than a boot script request waits.
    const slow = createServer((req, res) => {
      setTimeout(() => {
        const up = request(
          `${nginx.url}${(req.url ?? "/").slice(1)}`,
          { method: req.method, headers: req.headers },
          (r) => {
            res.writeHead(r.statusCode ?? 502, r.headers);
            r.pipe(res);
          },
        );
        up.on("error", () => res.destroy());
        req.pipe(up);
      }, 2000);
    });
    await new Promise<void>((r) => slow.listen(0, "127.0.0.1", r));
    t.after(() => slow.close());
    const slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/ubuntu.iso`;
    const right = sha256(readFileSync(iso));
    const wrong = "ab".repeat(32);
    const base = await serve(
      t,
      dir,
      `cache: { dir: ${dir}/cache }
entries:
  good: { iso: "${slowUrl}", sha256: ${right.toUpperCase()} }
  bad: { iso: "${nginx.url}ubuntu.iso", sha256: ${wrong} }
default: good
`,
    );
    const first = await (await get(`${base}/ipxe/entry/good?mac=${MAC}`)).text();
    assert.match(first, /(opening|checking) good's ISO/, first);
    // The dashboard does not wait for it: the images page says it is being opened or checked.
    const during = Date.now();
    const imagesPage = await (await get(`${base}/ui/images`)).text();
    assert.ok(Date.now() - during < 1000, "the images page answers while the ISO is checked");
    assert.match(imagesPage, /opening…|checking the whole ISO: \d+%/);
    assert.match(
      first,
      /\nsleep 5\nchain --replace --autofree http:\/\/\S+\/ipxe\/entry\/good\?mac=/,
    );
    let script = first;
    for (let i = 0; i < 40 && !/\nkernel /.test(script); i++) {
      await new Promise((r) => setTimeout(r, 500));
      script = await (await get(`${base}/ipxe/entry/good?mac=${MAC}`)).text();
    }
    assert.match(script, /inetboot\.boot=casper /, script);
    assert.deepEqual(verifiedMarks(dir), [right]);

    const bad = await (await get(`${base}/ipxe/entry/bad?mac=${MAC}`)).text();
    assert.ok(bad.includes(`has SHA-256 ${right}, not the ${wrong} it was given`), bad);
    assert.match(bad, /refusing to boot it/);
    assert.match(bad, /\nshell\n/);
    assert.equal((await get(`${base}/files/bad/kernel`)).status, 502);

    // sha256 belongs to iso entries and is 64 hex digits.
    const path = join(dir, "check.yaml");
    writeFileSync(
      path,
      `entries:\n  k: { kernel: /vmlinuz, sha256: ${right} }\n  i: { iso: /x.iso, sha256: nothex }\n`,
    );
    const r = await inetboot(["serve", "--config", path, "--check"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /check\.yaml:2.*sha256 is for iso entries/);
    assert.match(r.stderr, /check\.yaml:3.*expected 64 hex digits/);
  });

  it("checksums: the ISO's SHA-256 from its publisher's signed list (gpgv); a wrong hash or a changed list is refused", async (t) => {
    if (!requireGpg(t)) return;
    const dir = tempDir(t);
    const www = join(dir, "www");
    const iso = await makeIso(t, www, casperFiles(), ["-R", "-J"], "ubuntu-24.04-live.iso");
    if (!iso) return;
    const right = sha256(readFileSync(iso));
    copyFileSync(iso, join(www, "other.iso"));
    const publisher = gpgKey(t, "Test CD Image Signing <cdimage@example.org>");
    const keyring = publisher.exportTo(join(dir, "publisher.gpg"), false);
    // Ubuntu's layout: SHA256SUMS and its detached signature next to the ISOs; other.iso is
    // listed with a hash it does not have.
    writeFileSync(
      join(www, "SHA256SUMS"),
      `${right} *ubuntu-24.04-live.iso\n${"ab".repeat(32)} *other.iso\n`,
    );
    publisher.detachSign(join(www, "SHA256SUMS"), join(www, "SHA256SUMS.gpg"));
    // A second folder whose list was changed after signing.
    mkdirSync(join(www, "changed"));
    copyFileSync(iso, join(www, "changed", "ubuntu-24.04-live.iso"));
    writeFileSync(join(www, "changed", "SHA256SUMS"), `${right} *ubuntu-24.04-live.iso\n`);
    copyFileSync(join(www, "SHA256SUMS.gpg"), join(www, "changed", "SHA256SUMS.gpg"));
    // Arch's way: a detached signature over the ISO itself; grown.iso (the ISO and 2 KiB more)
    // comes with a copy of the ISO's signature: it is not the ISO that was signed.
    publisher.detachSign(iso, `${iso}.sig`);
    copyFileSync(`${iso}.sig`, join(www, "grown.iso.sig"));
    writeFileSync(join(www, "grown.iso"), Buffer.concat([readFileSync(iso), Buffer.alloc(2048)]));
    const nginx = await startNginx(t, www);
    if (!nginx) return;
    const sums = (folder: string): string =>
      `{ url: "${nginx.url}${folder}SHA256SUMS", signature: "${nginx.url}${folder}SHA256SUMS.gpg", keyring: ${keyring} }`;
    const base = await serve(
      t,
      dir,
      `cache: { dir: ${dir}/cache }
entries:
  good: { iso: "${nginx.url}ubuntu-24.04-live.iso", checksums: ${sums("")} }
  wrong: { iso: "${nginx.url}other.iso", checksums: ${sums("")} }
  changed: { iso: "${nginx.url}changed/ubuntu-24.04-live.iso", checksums: ${sums("changed/")} }
  signed: { iso: "${nginx.url}ubuntu-24.04-live.iso", signature: { url: "${nginx.url}ubuntu-24.04-live.iso.sig", keyring: ${keyring} } }
  badsig: { iso: "${nginx.url}grown.iso", signature: { url: "${nginx.url}grown.iso.sig", keyring: ${keyring} } }
default: good
`,
    );
    const script = async (name: string): Promise<string> => {
      let text = "";
      for (let i = 0; i < 40; i++) {
        text = await (await get(`${base}/ipxe/entry/${name}?mac=${MAC}`)).text();
        if (!/\nsleep 5\n/.test(text)) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      return text;
    };
    assert.match(await script("good"), /inetboot\.boot=casper /);
    assert.deepEqual(verifiedMarks(dir), [right]);
    // The ISO's own signature, checked by gpgv as the ISO streams through.
    assert.match(await script("signed"), /inetboot\.boot=casper /);
    const sigMark = `signature ${sha256(readFileSync(`${iso}.sig`))}`;
    assert.deepEqual(verifiedMarks(dir).sort(), [right, sigMark].sort());
    const badsig = await script("badsig");
    assert.match(
      badsig,
      /signature not accepted: the signature does not match the ISO \(it is not the ISO that was signed\)/,
    );
    assert.match(badsig, /refusing to boot it/);
    const wrong = await script("wrong");
    assert.ok(
      wrong.includes(`has SHA-256 ${right}, not the ${"ab".repeat(32)} it was given`),
      wrong,
    );
    assert.match(wrong, /\nshell\n/);
    const changed = await script("changed");
    assert.match(changed, /signature not accepted: the signature does not match the list/);
    assert.equal((await get(`${base}/files/changed/kernel`)).status, 502);
    // The dashboard's images page: what each ISO is checked against, and how that went.
    const images = (await (await get(`${base}/ui/images`)).text()).replace(/\s+/g, " ");
    assert.match(
      images,
      /SHA-256 from the signed list <span class="mono">http:\/\/[^<]*\/SHA256SUMS<\/span><\/td> <td>open<\/td>/,
    );
    assert.match(images, /refused: [^<]*signature not accepted/);
    const metrics = await (await get(`${base}/metrics`)).text();
    assert.match(metrics, /^inetboot_iso_opens_total\{entry="good",result="opened"\} 1$/m);
    assert.match(metrics, /^inetboot_iso_opens_total\{entry="changed",result="refused"\} [1-9]/m);
    // The changed ISO's blocks were never fetched: the list is checked before the ISO is read.
    const isoRequests = accessLogRequests(nginx.accessLog).filter((r) =>
      r.path.startsWith("/changed/ubuntu"),
    );
    assert.deepEqual(isoRequests, []);

    // checksums belongs to iso entries, needs a keyring, and excludes sha256.
    const path = join(dir, "check.yaml");
    writeFileSync(
      path,
      `entries:\n  k: { kernel: /vmlinuz, checksums: { url: /s, keyring: ${keyring} } }\n  i: { iso: /x.iso, checksums: { url: /s } }\n  j: { iso: /x.iso, sha256: ${right}, checksums: { url: /s, keyring: ${keyring} } }\n  s: { iso: /x.iso, signature: { url: /x.iso.sig, keyring: /no/such.key } }\n  t: { kernel: /vmlinuz, signature: { url: /s, keyring: ${keyring} } }\n`,
    );
    const r = await inetboot(["serve", "--config", path, "--check"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /check\.yaml:2.*checksums is for iso entries/);
    assert.match(r.stderr, /check\.yaml:3.*checksums needs keyring/);
    assert.match(
      r.stderr,
      /check\.yaml:4.*give one of sha256, checksums or signature, not sha256 and checksums/,
    );
    assert.match(r.stderr, /check\.yaml:5.*\/no\/such\.key does not exist/);
    assert.match(r.stderr, /check\.yaml:6.*signature is for iso entries/);
  });

  it("rejects a bad recipe name in the config with the file and line", async (t) => {
    const dir = tempDir(t);
    const path = join(dir, "serve.yaml");
    writeFileSync(path, `entries:\n  x:\n    iso: /nope.iso\n    recipe: gentoo\n`);
    const r = await inetboot(["serve", "--config", path, "--check"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /serve\.yaml:4.*expected one of casper, live-boot, dracut, archiso, knoppix/,
    );
  });
});
