// The dashboard and /metrics against `inetboot serve` with real boots recorded: in a test LAN,
// QEMU boots through its iPXE ROM (DHCP, TFTP, HTTP), busybox udhcpc asks for a lease with a
// hostile host name, and a plan request opens an image entry. Debian's Chromium (driven by
// playwright-core, run inside the LAN's namespace) loads every page on a desktop and a phone
// screen, checks the content and axe-core's WCAG 2.1 A/AA rules, sees live updates arrive while
// a page is open, and saves screenshots to test/artifacts/screenshots/. promtool checks
// /metrics, whose counters move with the traffic. Write actions are refused without the token
// and work with it; with ui.read-token the pages, /api and /metrics need it (Basic or Bearer)
// while the boot paths stay open.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Browser, Page } from "playwright-core";
import { hostKernel } from "./debian-rootfs.ts";
import {
  FixtureScope,
  inetbootOk,
  REPO,
  requireTool,
  run,
  tempDir,
  writeImage,
} from "./helpers.ts";
import { busyboxStatic, markerInitrd } from "./marker-initrd.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { Host, ServeProcess, TestLan } from "./netns.ts";
import { bootUntil, tapNic } from "./qemu.ts";

const MAC_QEMU = "52:54:00:12:34:56";
const MAC_HOSTILE = "52:54:00:66:66:66";
const MAC_LATE = "52:54:00:77:77:77";
const MAC_IMAGE = "52:54:00:88:88:88";
const HOSTILE = "<script>window.__xss=1</script>"; // (udhcpc cuts -x values at a space)
const TOKEN = "s3cret-token-for-tests";
const READ = "r3ad-token-for-tests"; // ui.read-token: pages, /api and /metrics need it
const CREDENTIALS = { username: "admin", password: READ };
const ARTIFACTS = join(REPO, "test", "artifacts", "screenshots");
const AXE = join(REPO, "node_modules", "axe-core", "axe.min.js");

/** A chromium that runs in the LAN's server namespace (so it reaches the server's address). */
function chromiumIn(dir: string, ns: string): string {
  const wrapper = join(dir, "chromium-in-netns");
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`);
  chmodSync(wrapper, 0o755);
  return wrapper;
}

/** Metric samples by "name{labels}" from Prometheus text. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^(\S+?(?:\{.*\})?) (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    out.set(m[1], Number(m[2]));
  }
  return out;
}

/**
 * WCAG 2.1 A and AA rules that axe-core (the accessibility engine) can check on the page as it
 * is: labels, names, contrast, landmarks, language, … Fails with each violation and where.
 */
async function assertAccessible(page: Page, name: string): Promise<void> {
  // Evaluated over the DevTools protocol: the page's CSP admits only its own scripts.
  await page.evaluate(readFileSync(AXE, "utf8"));
  const violations = await page.evaluate<string[]>(`axe
    .run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
    .then((r) => r.violations.map((v) => v.id + ": " + v.help + " at " + v.nodes.map((n) => n.target.join(" ")).join(", ")))`);
  assert.deepEqual(violations, [], `${name}: accessibility violations`);
}

function get(lan: TestLan, path: string): string {
  return lan.exec(lan.server, "curl", [
    "-sf",
    "-H",
    `Authorization: Bearer ${READ}`, // as Prometheus sends it
    `http://${lan.serverAddress}:8080${path}`,
  ]);
}

/** What the suite's before() builds once: a LAN with the server, a real boot, a hostile lease. */
interface World {
  dir: string;
  lan: TestLan;
  /** The QEMU machine's tap. */
  tap: string;
  /** A host on the LAN whose DHCP request carried a hostile host name. */
  hostile: Host;
  serve: ServeProcess;
  store: string;
  /** /metrics before any traffic. */
  metricsBefore: Map<string, number>;
  browser: Browser;
  base: string;
}

async function setUp(fx: FixtureScope): Promise<World | null> {
  if (!requireNetns(fx) || !requireTool(fx, "qemu-system-x86_64", "qemu-system-x86")) return null;
  if (!requireTool(fx, "chromium", "chromium") || !requireTool(fx, "promtool", "prometheus"))
    return null;
  if (!requireTool(fx, "udhcpc", "udhcpc") || !requireTool(fx, "nbdcopy", "libnbd-bin"))
    return null;
  const kit = hostKernel(fx);
  const busybox = busyboxStatic(fx);
  if (!kit || !busybox) return null;
  const { chromium } = await import("playwright-core");
  const dir = tempDir(fx);
  writeFileSync(join(dir, "marker.cpio"), markerInitrd(busybox, "INETBOOT-DASHBOARD-OK"));
  writeFileSync(join(dir, "second.cpio"), markerInitrd(busybox, "INETBOOT-DASHBOARD-NEXT"));

  // An image with two signed releases (v2 changes a little), for the images page.
  const disk = join(dir, "disk.img");
  writeImage(disk, [Buffer.alloc(1 << 20, 7), { zero: 3 << 20 }]);
  await inetbootOk(["keygen", "--out", join(dir, "k")]);
  const store = join(dir, "store");
  const pack = (): Promise<unknown> =>
    inetbootOk(["pack", disk, "--store", store, "--name", "tiny", "--key", join(dir, "k")]);
  await pack();
  writeImage(disk, [Buffer.alloc(1 << 20, 8), { zero: 3 << 20 }]);
  await pack();

  const lan = createLan(fx);
  const tap = lan.addTap();
  const config = join(dir, "serve.yaml");
  writeFileSync(
    config,
    `listen: { interface: br0, address: ${lan.serverAddress} }
dhcp: { mode: full, range: [${lan.prefix}.100, ${lan.prefix}.150] }
tftp: { enabled: true }
http: { port: 8080 }
state: ${join(dir, "state")}
ui: { write: true, token: ${TOKEN}, read-token: ${READ} }
entries:
  hello:
    title: Hello kernel
    kernel: ${kit.kernel}
    initrd: [${join(dir, "marker.cpio")}]
    cmdline: console=ttyS0 panic=-1
  later: { kernel: ${join(dir, "not-there-yet")} }
  second:
    kernel: ${kit.kernel}
    initrd: [${join(dir, "second.cpio")}]
    cmdline: console=ttyS0 panic=-1
  tiny:
    image: { name: tiny, store: ${store}, trust: [${join(dir, "k.pub")}] }
    kernel: ${kit.kernel}
    disk: per-machine
  tiny-old:
    image: { name: tiny@1, store: ${store}, trust: [${join(dir, "k.pub")}] }
    kernel: ${kit.kernel}
machines:
  - { match: { mac: "${MAC_QEMU}" }, boot: hello }
  - { name: image machines, match: { mac: "${MAC_IMAGE}" }, boot: tiny }
default: menu
`,
  );
  const serve = await startServe(lan, config);
  const metricsBefore = samples(get(lan, "/metrics"));

  // A real boot: QEMU's iPXE ROM, DHCP, TFTP, HTTP, kernel, initrd.
  await bootUntil(tapNic(tap, MAC_QEMU), /INETBOOT-DASHBOARD-OK/, 240_000, { netns: lan.server });
  // A machine whose DHCP request carries a hostile host name (option 12).
  const hostile = lan.addHost(`${lan.prefix}.60`); // (udhcpc's lease is not applied: -s /bin/true)
  lan.exec(hostile.ns, "ip", ["link", "set", "eth0", "address", MAC_HOSTILE]);
  lan.exec(hostile.ns, "udhcpc", [
    "-i",
    "eth0",
    "-n",
    "-q",
    "-f",
    "-x",
    `hostname:${HOSTILE}`,
    "-s",
    "/bin/true",
  ]);

  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: chromiumIn(dir, lan.server),
    args: ["--no-sandbox"],
  });
  fx.after(() => browser.close());
  const base = `http://${lan.serverAddress}:8080`;
  return { dir, lan, tap, hostile, serve, store, metricsBefore, browser, base };
}

type Viewport = { width: number; height: number };

/**
 * Opens a page (with the read token) on `viewport`, runs `fn`, checks that no dialog (alert,
 * confirm: a sign of injected script) opened, and closes it.
 */
async function withPage(
  browser: Browser,
  viewport: Viewport | undefined,
  fn: (page: Page) => Promise<void>,
): Promise<void> {
  const page = await browser.newPage({ viewport, httpCredentials: CREDENTIALS });
  const dialogs: string[] = [];
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  try {
    await fn(page);
    assert.deepEqual(dialogs, []);
  } finally {
    await page.close();
  }
}

/** A screenshot of the page to test/artifacts/screenshots/, and axe-core's WCAG check of it. */
async function shot(page: Page, name: string, device: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}-${device}.png`), fullPage: true });
  await assertAccessible(page, `${name} page on a ${device} screen`);
}

// The tests run in order on one server and share its state: each says what it relies on.
describe("dashboard and metrics", { timeout: 600_000 }, () => {
  const fx = new FixtureScope();
  let w: World;
  before(async () => {
    const built = await setUp(fx);
    if (built) w = built;
  });
  after(() => fx.close());

  it("the read token guards pages, /api, /metrics and the index (Basic); boot paths need none", (t) => {
    if (!fx.ready(t)) return;
    const { lan, hostile } = w;
    // (From the hostile host: the host's own failures are its own.)
    const status = (path: string, ...args: string[]): string =>
      lan.exec(hostile.ns, "curl", [
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{www-authenticate}",
        ...args,
        `http://${lan.serverAddress}:8080${path}`,
      ]);
    for (const path of ["/ui/machines", "/metrics", "/api/machines", "/api/events/stream", "/"]) {
      assert.equal(status(path), '401 Basic realm="inetboot", charset="UTF-8"', path);
    }
    assert.match(status("/ui/catalog", "-u", "admin:not-the-read-token"), /^401 /);
    assert.match(status("/ui/catalog", "-u", `admin:${READ}`), /^200 /);
    assert.match(status("/boot.ipxe"), /^200 /);
    assert.match(status("/healthz"), /^200 /);
  });

  it("a real TFTP client fetches undionly.kpxe", (t) => {
    if (!fx.ready(t)) return;
    // (QEMU's iPXE ROM goes straight to HTTP: this is the TFTP traffic /metrics counts.)
    w.lan.exec(w.hostile.ns, "curl", [
      "-sf",
      "--max-time",
      "30",
      "-o",
      "/dev/null",
      `tftp://${w.lan.serverAddress}/undionly.kpxe`,
    ]);
  });

  it("a plan for the image entry opens the image; its disk reads over NBD by that address", async (t) => {
    if (!fx.ready(t)) return;
    const { lan, serve } = w;
    const plan = get(lan, `/ipxe/boot?mac=${MAC_IMAGE}`);
    const exportName = /nbdroot=\S+?\/(\S+)/.exec(plan)?.[1];
    assert.ok(exportName?.startsWith(`tiny-${MAC_IMAGE.replace(/:/g, "-")}-`), plan);
    await serve.waitFor((l) => l.msg === "image opened");
    // Read by the address that asked for the plan: chunks are fetched.
    lan.exec(lan.server, "nbdcopy", [`nbd://${lan.serverAddress}:10809/${exportName}`, "null:"]);
  });

  // Relies on the traffic so far: the QEMU boot and the hostile lease (before), the refusals,
  // the TFTP fetch and the NBD read (the tests above).
  it("/metrics passes promtool's lint and its counters moved with the traffic", async (t) => {
    if (!fx.ready(t)) return;
    const { lan, dir, store } = w;
    const text = get(lan, "/metrics");
    writeFileSync(join(dir, "metrics.txt"), text);
    const lint = await run("sh", ["-c", `promtool check metrics < ${join(dir, "metrics.txt")}`]);
    assert.equal(lint.code, 0, `promtool: ${lint.stdout}${lint.stderr}`);
    const now = samples(text);
    const grew = (name: string): void =>
      assert.ok((now.get(name) ?? 0) > (w.metricsBefore.get(name) ?? 0), `${name} did not grow`);
    grew("inetboot_dhcp_replies_total");
    grew('inetboot_ui_refusals_total{reason="no read token"}');
    grew('inetboot_ui_refusals_total{reason="wrong read token"}');
    grew("inetboot_nbd_read_bytes_total");
    grew('inetboot_nbd_requests_total{command="read"}');
    grew("inetboot_tftp_sent_bytes_total");
    grew('inetboot_tftp_transfers_total{result="completed"}');
    grew('inetboot_http_requests_total{route="/files",status="200"}');
    grew('inetboot_boot_events_total{stage="http-kernel",firmware="bios+ipxe"}');
    assert.ok([...now.keys()].some((k) => k.startsWith("inetboot_chunk_fetch_seconds_bucket")));
    assert.ok((now.get("inetboot_cache_misses_total") ?? 0) >= 0);
    assert.ok(now.has('inetboot_mirror_requests_total{entry="tiny",mirror="' + store + '"}'));
  });

  it("a write action without the write token is refused (403)", async (t) => {
    if (!fx.ready(t)) return;
    const { lan } = w;
    const refusedNoToken = await run("ip", [
      "netns",
      "exec",
      lan.server,
      "curl",
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-X",
      "POST",
      "-u",
      `admin:${READ}`,
      "--data",
      "release=latest",
      `http://${lan.serverAddress}:8080/ui/images/tiny/pin`,
    ]);
    assert.equal(refusedNoToken.stdout, "403");
  });

  for (const [device, viewport] of [
    ["desktop", { width: 1280, height: 800 }],
    ["phone", { width: 390, height: 844 }],
  ] as const) {
    // Each page as a browser shows it on this screen, with a screenshot and axe-core's check.
    describe(`pages on a ${device} screen`, () => {
      it("the machines page lists the QEMU boot: iPXE, its HTTP stage, entry hello", async (t) => {
        if (!fx.ready(t)) return;
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/machines`);
          const qemuRow = page.locator("#machines-body tr").filter({ hasText: MAC_QEMU });
          await qemuRow.waitFor();
          const qemuText = await qemuRow.innerText();
          assert.match(qemuText, /iPXE/);
          assert.match(qemuText, /http-initrd|http-kernel/);
          assert.match(qemuText, /hello/);
        });
      });

      it("the machines page shows the hostile host name as text: no script runs, no markup is injected", async (t) => {
        if (!fx.ready(t)) return;
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/machines`);
          const rows = page.locator("#machines-body tr");
          await rows.filter({ hasText: MAC_QEMU }).waitFor();
          const hostileText = await rows.filter({ hasText: MAC_HOSTILE }).innerText();
          assert.ok(hostileText.includes(HOSTILE), `the host name shows as text: ${hostileText}`);
          assert.equal(await page.evaluate("window.__xss"), undefined, "no script ran");
          assert.equal(
            await page.locator("#machines-body script").count(),
            0,
            "no markup injected",
          );
        });
      });

      it("the machines page is accessible: language, main landmark, the skip link first in tab order, WCAG 2.1 AA", async (t) => {
        if (!fx.ready(t)) return;
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/machines`);
          await page.locator("#machines-body tr").filter({ hasText: MAC_QEMU }).waitFor();
          assert.equal(await page.getAttribute("html", "lang"), "en");
          assert.equal(await page.locator("main#main").count(), 1);
          await page.keyboard.press("Tab");
          assert.equal(
            await page.evaluate("document.activeElement.textContent"),
            "Skip to content",
          );
          await shot(page, "machines", device);
        });
      });

      it("a new machine appears live on the open machines page and on its own page, without a reload", async (t) => {
        if (!fx.ready(t)) return;
        // A MAC of its own per screen: the desktop's late machine exists when the phone runs.
        const lateMac = device === "desktop" ? MAC_LATE : MAC_LATE.replace(/7$/, "8");
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/machines`);
          const rows = page.locator("#machines-body tr");
          await rows.filter({ hasText: MAC_QEMU }).waitFor();
          await withPage(w.browser, viewport, async (machinePage) => {
            await machinePage.goto(`${w.base}/ui/machines/${lateMac}`);
            await machinePage.locator("#live", { hasText: "Live" }).waitFor();
            await page.locator("#live", { hasText: "Live" }).waitFor();
            get(w.lan, `/ipxe/boot?mac=${lateMac}`);
            await rows.filter({ hasText: lateMac }).waitFor({ timeout: 10_000 });
            await machinePage
              .locator("#timeline tr", { hasText: "http-plan" })
              .waitFor({ timeout: 10_000 });
            assert.equal(await machinePage.locator("#last-stage").innerText(), "http-plan");
            await shot(machinePage, "machine", device);
          });
        });
      });

      it("a machine's page shows its boot timeline, DHCP to initrd", async (t) => {
        if (!fx.ready(t)) return;
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/machines/${MAC_QEMU}`);
          const timeline = await page.locator("#timeline").innerText();
          for (const stage of [
            "dhcp-ack",
            "http-boot-script",
            "http-plan",
            "http-kernel",
            "http-initrd",
          ]) {
            assert.match(timeline, new RegExp(stage), `timeline has ${stage}`);
          }
        });
      });

      it("the catalog page shows the entries, the rules and the configuration's problem; accessible", async (t) => {
        if (!fx.ready(t)) return;
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/catalog`);
          const catalog = await page.locator("main").innerText();
          assert.match(catalog, /Hello kernel/);
          assert.match(catalog, /image machines/);
          assert.match(catalog, /not-there-yet.*does not exist/);
          await shot(page, "catalog", device);
        });
      });

      // Before the roll-back below: release 2 is still the one in use.
      it("the images page shows both releases verified, the one in use, the stored size and labelled roll-back forms; accessible", async (t) => {
        if (!fx.ready(t)) return;
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/images`);
          const images = await page.locator("main").innerText();
          assert.match(images, /tiny@2/);
          assert.match(images, /1\s+.*verified/);
          assert.match(images, /2 \(in use\)/);
          // Stored: the compressed chunks (1 MiB of one byte compresses to almost nothing).
          assert.match(images, /4\.00 MiB\s+\d+(\.\d+)? (B|KiB)\s/);
          assert.equal((await page.locator("form input[name=token]").count()) >= 2, true);
          const unlabelled = await page.evaluate(
            "Array.from(document.querySelectorAll('input:not([type=hidden])')).filter((e) => !e.closest('label')).length",
          );
          assert.equal(unlabelled, 0, "every input has a label");
          await shot(page, "images", device);
        });
      });

      // Relies on the plan and NBD read above: the tiny entry's image is open and cached.
      it("the cache page shows the hit rate, the healthy mirror and which entries can boot offline; accessible", async (t) => {
        if (!fx.ready(t)) return;
        await withPage(w.browser, viewport, async (page) => {
          await page.goto(`${w.base}/ui/cache`);
          const cache = await page.locator("main").innerText();
          assert.match(cache, /Hit rate/);
          assert.match(cache, new RegExp(w.store.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
          assert.match(cache, /healthy/);
          assert.match(cache, /tiny\s+tiny@2\s+yes/, "the opened image can boot offline");
          assert.match(cache, /tiny-old\s+—\s+no\s+nothing of it is in the cache yet/);
          await shot(page, "cache", device);
        });
      });
    });
  }

  /** Revision 1's row of entry tiny on the images page (tiny-old lists the same store after it). */
  const rev1Row = (page: Page) =>
    page
      .locator("tbody tr")
      .filter({ has: page.locator("td:first-child", { hasText: /^1\b/ }) })
      .filter({ has: page.locator("form") })
      .first();

  // This wrong token (and the missing one above) count towards the guessing limit tested last:
  // the browser and curl both reach the server from its own address.
  it("rolling back from the images page with a wrong token is refused", async (t) => {
    if (!fx.ready(t)) return;
    await withPage(w.browser, undefined, async (page) => {
      await page.goto(`${w.base}/ui/images`);
      const rev1 = rev1Row(page);
      await rev1.locator("input[name=token]").fill("wrong-token-value");
      await rev1.locator("button").click();
      assert.match(await page.locator("main").innerText(), /Wrong or missing token/);
    });
  });

  it("rolling back with the right token pins revision 1; the entry's next boot opens it", async (t) => {
    if (!fx.ready(t)) return;
    await withPage(w.browser, undefined, async (page) => {
      await page.goto(`${w.base}/ui/images`);
      const rev1 = rev1Row(page);
      await rev1.locator("input[name=token]").fill(TOKEN);
      await rev1.locator("button").click();
      await page.waitForURL(`${w.base}/ui/images`);
      assert.match(await page.locator("main").innerText(), /1 \(pinned\)/);
    });
    get(w.lan, `/ipxe/boot?mac=${MAC_IMAGE}`);
    await w.serve.waitFor((l) => l.msg === "image opened" && l.image === "tiny@1");
  });

  // Relies on the image machine's plan above: it has a per-machine disk.
  it("resetting the image machine's disk from its page discards its overlay", async (t) => {
    if (!fx.ready(t)) return;
    const overlay = join(w.dir, "state", "overlays", "tiny", `${MAC_IMAGE.replace(/:/g, "-")}.cow`);
    assert.ok(existsSync(overlay), "the machine has a disk");
    await withPage(w.browser, undefined, async (page) => {
      await page.goto(`${w.base}/ui/machines/${MAC_IMAGE}`);
      const reset = page.locator("form", { hasText: "Reset this machine's disk" });
      await reset.locator("input[name=token]").fill(TOKEN);
      await reset.locator("button").click();
      await page.waitForURL(new RegExp(`/ui/machines/${encodeURIComponent(MAC_IMAGE)}$`));
      await page.locator("#timeline tr", { hasText: "ui-reset-disk" }).waitFor();
    });
    assert.ok(!existsSync(overlay), "the disk was discarded");
  });

  it("the machine page's registry form adopts the QEMU machine with a next boot: QEMU boots it once, then its rule's entry", async (t) => {
    if (!fx.ready(t)) return;
    await withPage(w.browser, undefined, async (page) => {
      await page.goto(`${w.base}/ui/machines/${MAC_QEMU}`);
      const form = page.locator("form.registry");
      await form.getByLabel("Host name").fill("lab-qemu");
      await form.getByLabel("Labels").fill("rack=r9");
      await form.getByLabel("Next boot").selectOption("second");
      await form.locator("input[name=token]").fill(TOKEN);
      await form.getByRole("button", { name: "Adopt this machine" }).click();
      await page.waitForURL(new RegExp(`/ui/machines/${encodeURIComponent(MAC_QEMU)}$`));
      assert.match(
        await page.locator("main").innerText(),
        /Its registry record \(version 1\) wins over the rules/,
      );
      assert.match(await page.locator("main").innerText(), /registry: next boot/);
    });
    const record = JSON.parse(get(w.lan, `/api/v1/machines/${MAC_QEMU}`)) as Record<
      string,
      unknown
    >;
    assert.equal(record.hostname, "lab-qemu");
    assert.deepEqual(record.labels, { rack: "r9" });
    assert.equal(record.next, "second");
    // QEMU boots it: the next boot is the one chosen on the page, the one after its rule's again.
    const again = (marker: RegExp): Promise<string> =>
      bootUntil(tapNic(w.tap, MAC_QEMU), marker, 240_000, { netns: w.lan.server });
    await again(/INETBOOT-DASHBOARD-NEXT/);
    await again(/INETBOOT-DASHBOARD-OK/);
  });

  // Last: it leaves the server's own address refused for a minute.
  it("after five wrong tokens in a minute the address is refused, even with the right token", async (t) => {
    if (!fx.ready(t)) return;
    const { lan } = w;
    const post = (token: string) =>
      run("ip", [
        "netns",
        "exec",
        lan.server,
        "curl",
        "-s",
        "-D",
        "-",
        "-u",
        `admin:${READ}`,
        "--data",
        `release=latest&token=${token}`,
        `http://${lan.serverAddress}:8080/ui/images/tiny/pin`,
      ]).then((r) => r.stdout);
    const statuses: string[] = [];
    for (let i = 0; i < 12 && !statuses.includes("429"); i++) {
      statuses.push(/^HTTP\/1\.1 (\d+)/.exec(await post(`guess-${i}-xxxxxxxx`))?.[1] ?? "");
    }
    assert.ok(statuses.length <= 6, `refused only after ${statuses.join(" ")}`);
    assert.deepEqual(new Set(statuses), new Set(["403", "429"]));
    const blocked = await post(TOKEN);
    assert.match(blocked, /^HTTP\/1\.1 429/);
    assert.match(blocked, /^Retry-After: \d+/im);
    assert.match(blocked, /Too many wrong tokens/);
  });
});
