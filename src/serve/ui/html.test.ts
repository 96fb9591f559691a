import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { catalogPage } from "./catalog-page.ts";
import { machineRows, machinesPage } from "./machine-pages.ts";
import type { MachineRow } from "./machine-pages.ts";
import { html } from "./html.ts";
import { parseConfig } from "../config.ts";
import { renderFamilies, Metrics } from "../metrics.ts";

const hostile = `"><script>alert(1)</script><img src=x onerror=alert(2)>`;

describe("dashboard HTML", () => {
  it("escapes every interpolated value; fragments pass through", () => {
    assert.equal(
      html`<td title="${hostile}">${hostile}</td>`.text,
      `<td title="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;">&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;</td>`,
    );
    assert.equal(
      html`<p>${html`<b>${"&"}</b>`}${["<", html`<i />`]}${null}${false}</p>`.text,
      "<p><b>&amp;</b>&lt;<i /></p>",
    );
  });

  it("machine data from the network never becomes markup on the machines page", () => {
    const row: MachineRow = {
      mac: "52:54:00:00:00:01",
      hostname: hostile,
      ip: hostile,
      lastStage: hostile,
      lastSeen: "2026-01-01T00:00:00.000Z",
      firstSeen: "2026-01-01T00:00:00.000Z",
      events: 1,
      ipxe: { platform: hostile, buildarch: hostile },
      loader: hostile,
      lastFile: hostile,
      secureBoot: "unknown",
      next: { entry: hostile, rule: hostile, once: hostile },
    };
    for (const text of [machinesPage([row]), machineRows([row]).text]) {
      assert.ok(!text.includes("<script>alert"), "no script tag from data");
      assert.ok(!text.includes("<img src=x"), "no img tag from data");
      assert.ok(text.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
  });

  it("the catalog escapes titles and command lines from the configuration", () => {
    const config = parseConfig(
      `entries:\n  a: { kernel: /nope, title: '${hostile.replace(/'/g, "''")}', cmdline: '<b>x</b>' }\ndefault: a\n`,
      "/tmp/serve.yaml",
    );
    const page = catalogPage(config);
    assert.ok(!page.includes("<script>alert") && page.includes("&lt;b&gt;x&lt;/b&gt;"));
  });
});

describe("metrics text", () => {
  it("renders counters and histograms in Prometheus text format with escaped labels", () => {
    const m = new Metrics();
    m.inc("x_total", "Things", { path: 'a"b\\c\nd' }, 2);
    m.observe("lat_seconds", "Latency", { mirror: "m" }, 0.03, [0.01, 0.05]);
    m.observe("lat_seconds", "Latency", { mirror: "m" }, 0.5, [0.01, 0.05]);
    const text = renderFamilies(m.families());
    assert.match(
      text,
      /^# HELP x_total Things\n# TYPE x_total counter\nx_total\{path="a\\"b\\\\c\\nd"\} 2\n/,
    );
    assert.match(text, /lat_seconds_bucket\{mirror="m",le="0.01"\} 0\n/);
    assert.match(text, /lat_seconds_bucket\{mirror="m",le="0.05"\} 1\n/);
    assert.match(text, /lat_seconds_bucket\{mirror="m",le="\+Inf"\} 2\n/);
    assert.match(text, /lat_seconds_sum\{mirror="m"\} 0.53\n/);
    assert.match(text, /lat_seconds_count\{mirror="m"\} 2\n/);
  });
});
