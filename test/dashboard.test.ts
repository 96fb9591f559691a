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
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import type { Page } from "playwright-core";
import { hostKernel } from "./debian-rootfs.ts";
import { inetbootOk, REPO, requireTool, run, tempDir, writeImage } from "./helpers.ts";
import { busyboxStatic, markerInitrd } from "./marker-initrd.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";
import type { TestLan } from "./netns.ts";
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

describe("dashboard and metrics", { timeout: 600_000 }, () => {
  it("pages show real boots, update live, escape what machines send; /metrics passes promtool; write actions need the token", async (t: TestContext) => {
    if (!requireNetns(t) || !requireTool(t, "qemu-system-x86_64", "qemu-system-x86")) return;
    if (!requireTool(t, "chromium", "chromium") || !requireTool(t, "promtool", "prometheus"))
      return;
    if (!requireTool(t, "udhcpc", "udhcpc") || !requireTool(t, "nbdcopy", "libnbd-bin")) return;
    const kit = hostKernel(t);
    const busybox = busyboxStatic(t);
    if (!kit || !busybox) return;
    const { chromium } = await import("playwright-core");
    const dir = tempDir(t);
    writeFileSync(join(dir, "marker.cpio"), markerInitrd(busybox, "INETBOOT-DASHBOARD-OK"));

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

    const lan = createLan(t);
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
    const before = samples(get(lan, "/metrics"));

    // A real boot: QEMU's iPXE ROM, DHCP, TFTP, HTTP, kernel, initrd.
    await bootUntil(tapNic(tap, MAC_QEMU), /INETBOOT-DASHBOARD-OK/, 240_000, { netns: lan.server });
    // A machine whose DHCP request carries a hostile host name (option 12).
    const h = lan.addHost(`${lan.prefix}.60`); // (udhcpc's lease is not applied: -s /bin/true)
    lan.exec(h.ns, "ip", ["link", "set", "eth0", "address", MAC_HOSTILE]);
    lan.exec(h.ns, "udhcpc", [
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
    // The read token: pages, /api, /metrics and the index ask for it (Basic), a wrong one is
    // refused; what machines fetch to boot needs none. (From the host: its failures are its own.)
    const status = (path: string, ...args: string[]): string =>
      lan.exec(h.ns, "curl", [
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
    // TFTP traffic from a real client (QEMU's iPXE ROM goes straight to HTTP).
    lan.exec(h.ns, "curl", [
      "-sf",
      "--max-time",
      "30",
      "-o",
      "/dev/null",
      `tftp://${lan.serverAddress}/undionly.kpxe`,
    ]);
    // A machine that boots the image entry (its plan opens the image and exports it).
    const plan = get(lan, `/ipxe/boot?mac=${MAC_IMAGE}`);
    const exportName = /nbdroot=\S+?\/(\S+)/.exec(plan)?.[1];
    assert.ok(exportName?.startsWith(`tiny-${MAC_IMAGE.replace(/:/g, "-")}-`), plan);
    await serve.waitFor((l) => l.msg === "image opened");
    // Its disk read over NBD (by the address that asked for the plan): chunks are fetched.
    lan.exec(lan.server, "nbdcopy", [`nbd://${lan.serverAddress}:10809/${exportName}`, "null:"]);

    // /metrics: promtool's lint passes, and the counters moved with the traffic.
    const text = get(lan, "/metrics");
    writeFileSync(join(dir, "metrics.txt"), text);
    const lint = await run("sh", ["-c", `promtool check metrics < ${join(dir, "metrics.txt")}`]);
    assert.equal(lint.code, 0, `promtool: ${lint.stdout}${lint.stderr}`);
    const after = samples(text);
    const grew = (name: string): void =>
      assert.ok((after.get(name) ?? 0) > (before.get(name) ?? 0), `${name} did not grow`);
    grew("inetboot_dhcp_replies_total");
    grew('inetboot_ui_refusals_total{reason="no read token"}');
    grew('inetboot_ui_refusals_total{reason="wrong read token"}');
    grew("inetboot_nbd_read_bytes_total");
    grew('inetboot_nbd_requests_total{command="read"}');
    grew("inetboot_tftp_sent_bytes_total");
    grew('inetboot_tftp_transfers_total{result="completed"}');
    grew('inetboot_http_requests_total{route="/files",status="200"}');
    grew('inetboot_boot_events_total{stage="http-kernel",firmware="bios+ipxe"}');
    assert.ok([...after.keys()].some((k) => k.startsWith("inetboot_chunk_fetch_seconds_bucket")));
    assert.ok((after.get("inetboot_cache_misses_total") ?? 0) >= 0);
    assert.ok(after.has('inetboot_mirror_requests_total{entry="tiny",mirror="' + store + '"}'));

    // Write actions: refused without the token (and with a wrong one).
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

    mkdirSync(ARTIFACTS, { recursive: true });
    const browser = await chromium.launch({
      executablePath: chromiumIn(dir, lan.server),
      args: ["--no-sandbox"],
    });
    t.after(() => browser.close());
    const base = `http://${lan.serverAddress}:8080`;
    for (const [device, viewport] of [
      ["desktop", { width: 1280, height: 800 }],
      ["phone", { width: 390, height: 844 }],
    ] as const) {
      const page = await browser.newPage({ viewport, httpCredentials: CREDENTIALS });
      const dialogs: string[] = [];
      page.on("dialog", (d) => {
        dialogs.push(d.message());
        void d.dismiss();
      });
      // A screenshot of each page on each screen, and axe-core's WCAG check of it.
      const shot = async (name: string): Promise<void> => {
        await page.screenshot({ path: join(ARTIFACTS, `${name}-${device}.png`), fullPage: true });
        await assertAccessible(page, `${name} page on a ${device} screen`);
      };

      // Machines: the QEMU boot, its firmware and plan; the hostile name shown as text.
      await page.goto(`${base}/ui/machines`);
      const rows = page.locator("#machines-body tr");
      const qemuRow = rows.filter({ hasText: MAC_QEMU });
      await qemuRow.waitFor();
      const qemuText = await qemuRow.innerText();
      assert.match(qemuText, /iPXE/);
      assert.match(qemuText, /http-initrd|http-kernel/);
      assert.match(qemuText, /hello/);
      const hostileRow = rows.filter({ hasText: MAC_HOSTILE });
      const hostileText = await hostileRow.innerText();
      assert.ok(hostileText.includes(HOSTILE), `the host name shows as text: ${hostileText}`);
      assert.equal(await page.evaluate("window.__xss"), undefined, "no script ran");
      assert.equal(await page.locator("#machines-body script").count(), 0, "no markup injected");
      // Accessibility basics: language, landmarks, the skip link first in tab order.
      assert.equal(await page.getAttribute("html", "lang"), "en");
      assert.equal(await page.locator("main#main").count(), 1);
      await page.keyboard.press("Tab");
      assert.equal(await page.evaluate("document.activeElement.textContent"), "Skip to content");
      await shot("machines");

      // A live update while the page is open: a new machine appears without a reload.
      const lateMac = device === "desktop" ? MAC_LATE : MAC_LATE.replace(/7$/, "8");
      const machinePage = await browser.newPage({ viewport, httpCredentials: CREDENTIALS });
      await machinePage.goto(`${base}/ui/machines/${lateMac}`);
      await machinePage.locator("#live", { hasText: "Live" }).waitFor();
      await page.locator("#live", { hasText: "Live" }).waitFor();
      get(lan, `/ipxe/boot?mac=${lateMac}`);
      await rows.filter({ hasText: lateMac }).waitFor({ timeout: 10_000 });
      await machinePage
        .locator("#timeline tr", { hasText: "http-plan" })
        .waitFor({ timeout: 10_000 });
      assert.equal(await machinePage.locator("#last-stage").innerText(), "http-plan");
      await machinePage.screenshot({
        path: join(ARTIFACTS, `machine-${device}.png`),
        fullPage: true,
      });
      await assertAccessible(machinePage, `machine page on a ${device} screen`);
      await machinePage.close();

      // One machine's timeline.
      await page.goto(`${base}/ui/machines/${MAC_QEMU}`);
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

      // Catalog: entries, rules, and the configuration's problem.
      await page.goto(`${base}/ui/catalog`);
      const catalog = await page.locator("main").innerText();
      assert.match(catalog, /Hello kernel/);
      assert.match(catalog, /image machines/);
      assert.match(catalog, /not-there-yet.*does not exist/);
      await shot("catalog");

      // Images: both releases, signatures verified, the one in use, the roll-back form.
      await page.goto(`${base}/ui/images`);
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
      await shot("images");

      // Cache and mirrors.
      await page.goto(`${base}/ui/cache`);
      const cache = await page.locator("main").innerText();
      assert.match(cache, /Hit rate/);
      assert.match(cache, new RegExp(store.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
      assert.match(cache, /healthy/);
      assert.match(cache, /tiny\s+tiny@2\s+yes/, "the opened image can boot offline");
      assert.match(cache, /tiny-old\s+—\s+no\s+nothing of it is in the cache yet/);
      await shot("cache");
      assert.deepEqual(dialogs, []);
      await page.close();
    }

    // Roll back from the page: a wrong token is refused, the right one pins revision 1.
    const page = await browser.newPage({ httpCredentials: CREDENTIALS });
    await page.goto(`${base}/ui/images`);
    const rev1 = page
      .locator("tbody tr")
      .filter({ has: page.locator("td:first-child", { hasText: /^1\b/ }) })
      .filter({ has: page.locator("form") })
      .first(); // entry tiny's table (tiny-old lists the same store after it)
    await rev1.locator("input[name=token]").fill("wrong-token-value");
    await rev1.locator("button").click();
    assert.match(await page.locator("main").innerText(), /Wrong or missing token/);
    await page.goto(`${base}/ui/images`);
    await rev1.locator("input[name=token]").fill(TOKEN);
    await rev1.locator("button").click();
    await page.waitForURL(`${base}/ui/images`);
    assert.match(await page.locator("main").innerText(), /1 \(pinned\)/);
    // The next boot of the entry opens the pinned release.
    get(lan, `/ipxe/boot?mac=${MAC_IMAGE}`);
    await serve.waitFor((l) => l.msg === "image opened" && l.image === "tiny@1");

    // Reset the image machine's disk from its page: its overlay is gone afterwards.
    const overlay = join(dir, "state", "overlays", "tiny", `${MAC_IMAGE.replace(/:/g, "-")}.cow`);
    assert.ok(existsSync(overlay), "the machine has a disk");
    await page.goto(`${base}/ui/machines/${MAC_IMAGE}`);
    const reset = page.locator("form", { hasText: "Reset this machine's disk" });
    await reset.locator("input[name=token]").fill(TOKEN);
    await reset.locator("button").click();
    await page.waitForURL(new RegExp(`/ui/machines/${encodeURIComponent(MAC_IMAGE)}$`));
    await page.locator("#timeline tr", { hasText: "ui-reset-disk" }).waitFor();
    assert.ok(!existsSync(overlay), "the disk was discarded");
    await page.close();

    // Guessing the token: after five wrong ones in a minute the address is refused for the rest
    // of it, even with the right token.
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
