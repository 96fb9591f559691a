import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, parseConfig } from "./config.ts";
import { chooseEntry, ipxeArchNames } from "./plan.ts";

// The example from the issue, verbatim.
const EXAMPLE = `listen: { interface: tap0, address: 10.99.0.1 }
dhcp: { mode: proxy }            # proxy | full | off; full also takes range, router, dns, lease file, reservations
tftp: { enabled: true }          # port 69; serves iPXE first stages and a root folder
http: { port: 8080 }
entries:
  hello:
    kernel: /srv/boot/vmlinuz     # local path or http(s) URL
    initrd: [/srv/boot/initrd.img]
    cmdline: console=ttyS0
  menu: { menu: [hello, local] }
machines:
  - match: { mac: "52:54:00:12:34:56" }
    boot: hello
default: menu
`;

function problems(text: string): string[] {
  try {
    parseConfig(text, "serve.yaml");
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail("expected the configuration to be refused");
}

describe("serve configuration", () => {
  it("accepts the documented example, warning about files that are not there", () => {
    const c = parseConfig(EXAMPLE, "serve.yaml");
    assert.equal(c.dhcp.mode, "proxy");
    assert.equal(c.tftp.enabled, true);
    assert.equal(c.http.port, 8080);
    assert.equal(c.default, "menu");
    const hello = c.entries.get("hello");
    assert.equal(hello?.kind, "kernel");
    assert.deepEqual(c.machines[0].match.mac, "52:54:00:12:34:56");
    assert.ok(
      c.warnings.some((w) =>
        /serve\.yaml:7: entries\.hello\.kernel: file \/srv\/boot\/vmlinuz/.test(w),
      ),
    );
  });

  it("built-in defaults: HTTP on 8080, DHCP and TFTP off, a menu of the entries", () => {
    const c = parseConfig(null, "(built-in defaults)");
    assert.deepEqual(
      [c.http.port, c.dhcp.mode, c.tftp.enabled, c.default],
      [8080, "off", false, "menu"],
    );
    const menu = c.entries.get("menu");
    assert.ok(menu?.kind === "menu" && menu.items.includes("local"));
  });

  it("names the file, the line and what was expected", () => {
    const p = problems(
      `dhcp: { mode: proxi }\nhttp: { port: 99999 }\nentries:\n  a: { kernel: /k, menu: [b] }\n  b: { menu: [nope] }\nmachines:\n  - match: { mac: "zz:00" }\n    boot: missing\ndefault: nothing\nbogus: 1\n`,
    );
    const text = p.join("\n");
    assert.match(text, /serve\.yaml:1: dhcp\.mode: expected one of off, proxy, full, got "proxi"/);
    assert.match(text, /serve\.yaml:2: http\.port: expected a whole number from 0 to 65535/);
    assert.match(
      text,
      /serve\.yaml:4: entries\.a: an entry is one kind; this one has kernel and menu/,
    );
    assert.match(text, /serve\.yaml:5: entries\.b\.menu\[0\]: no entry named "nope"/);
    assert.match(text, /serve\.yaml:7: machines\[0\]\.match\.mac: "zz:00" is not a MAC address/);
    assert.match(text, /serve\.yaml:8: machines\[0\]\.boot: no entry named "missing"/);
    assert.match(text, /serve\.yaml:9: default: no entry named "nothing"/);
    assert.match(text, /serve\.yaml:10: bogus: unknown key "bogus"/);
  });

  it("checks image entries: store, trust, kernel, disk", () => {
    const p = problems(`entries:\n  img:\n    image: { name: debian }\n    disk: forever\n`).join(
      "\n",
    );
    assert.match(p, /serve\.yaml:3: entries\.img\.image: an image needs store/);
    assert.match(p, /an image needs trust: \[public key files\]/);
    assert.match(p, /serve\.yaml:3: entries\.img: an image entry needs kernel/);
    assert.match(p, /serve\.yaml:4: entries\.img\.disk: expected one of ephemeral, per-machine/);
    const c = parseConfig(
      `entries:\n  img:\n    image: { name: debian@sha256:${"a".repeat(64)}, store: [http://a/s, http://b/s], insecure: true }\n    kernel: /k\n`,
      "serve.yaml",
    );
    const e = c.entries.get("img");
    assert.ok(e?.kind === "image");
    assert.deepEqual(e.image.stores, ["http://a/s", "http://b/s"]);
    assert.equal(e.disk, "ephemeral");
    assert.equal(c.nbd.port, 10809);
  });

  it("dashboard secrets: write needs a token, a read token is optional, both at least 12 characters", () => {
    assert.match(
      problems("ui: { write: true }\n").join("\n"),
      /serve\.yaml:1: ui\.write: write actions need ui\.token/,
    );
    assert.match(
      problems("ui: { read-token: short }\n").join("\n"),
      /serve\.yaml:1: ui\.read-token: ui\.read-token \(or ui\.read-token-file\) must be: a secret of at least 12 characters/,
    );
    assert.match(
      problems("ui: { read-token-file: /nonexistent/token }\n").join("\n"),
      /ui\.read-token-file: cannot read \/nonexistent\/token/,
    );
    const open = parseConfig("ui: { write: true, token: write-secret-1234 }\n", "serve.yaml");
    assert.deepEqual(open.ui, { write: true, token: "write-secret-1234", readToken: undefined });
    const closed = parseConfig("ui: { read-token: read-secret-1234 }\n", "serve.yaml");
    assert.deepEqual(closed.ui, { write: false, token: undefined, readToken: "read-secret-1234" });
  });

  it("needs an interface for DHCP and a range for full mode; reports YAML syntax errors with a line", () => {
    const p = problems("dhcp: { mode: full }\n");
    assert.ok(p.some((x) => /needs listen\.interface/.test(x)));
    assert.ok(p.some((x) => /full mode needs range/.test(x)));
    assert.match(problems("entries:\n  a: [\n")[0], /^serve\.yaml:\d+: /);
  });
});

describe("machine matching", () => {
  const c = parseConfig(
    `entries:
  a: { chain: http://x/a }
  b: { chain: http://x/b }
  c: { chain: http://x/c }
  d: { chain: http://x/d }
machines:
  - { match: { arch: uefi }, boot: a }
  - { match: { labels: { rack: r1 } }, boot: b }
  - { match: { mac: "52:54:00:00:00:01" }, boot: c }
  - { match: { hostname: build1, arch: bios }, boot: d }
default: local
`,
    "m.yaml",
  );
  const facts = (
    over: Partial<Parameters<typeof chooseEntry>[1]>,
  ): Parameters<typeof chooseEntry>[1] => ({
    arch: [],
    labels: {},
    ...over,
  });

  it("the most specific match wins; unmatched machines get the default", () => {
    assert.equal(chooseEntry(c, facts({ arch: ipxeArchNames("x86_64", "efi") })).entry, "a");
    assert.equal(
      chooseEntry(c, facts({ arch: ipxeArchNames("x86_64", "efi"), labels: { rack: "r1" } })).entry,
      "b",
    );
    const byMac = chooseEntry(c, facts({ mac: "52:54:00:00:00:01", labels: { rack: "r1" } }));
    assert.deepEqual([byMac.entry, byMac.rule], ["c", "machines[2]"]);
    assert.equal(chooseEntry(c, facts({ hostname: "BUILD1", arch: ["bios"] })).entry, "d");
    assert.equal(chooseEntry(c, facts({ hostname: "build1", arch: ["uefi"] })).entry, "a");
    assert.deepEqual(chooseEntry(c, facts({})), { entry: "local", rule: "default" });
  });
});
