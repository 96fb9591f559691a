import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, fakeHost, parseConfig } from "./config.ts";
import { chooseEntry, ipxeArchNames } from "./plan.ts";

// Parsing is pure: the host it would probe is a fake one (no files but Debian's iPXE binaries).
const host = fakeHost({ "/usr/lib/ipxe/undionly.kpxe": "", "/usr/lib/ipxe/ipxe.efi": "" });

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
    parseConfig(text, "serve.yaml", host);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail("expected the configuration to be refused");
}

describe("serve configuration", () => {
  it("accepts the documented example, warning about files that are not there", () => {
    const c = parseConfig(EXAMPLE, "serve.yaml", host);
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
    const c = parseConfig(null, "(built-in defaults)", host);
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
    const p = problems(
      `entries:\n  img:\n    image: { name: debian }\n    disk: forever\n    initrd: /i\n`,
    ).join("\n");
    assert.match(p, /serve\.yaml:3: entries\.img\.image: an image needs store/);
    assert.match(p, /an image needs trust: \[public key files\]/);
    // No kernel: the image's own; an initrd alone is a mistake.
    assert.match(p, /serve\.yaml:5: entries\.img\.initrd: initrd: needs kernel:/);
    assert.match(p, /serve\.yaml:4: entries\.img\.disk: expected one of ephemeral, per-machine/);
    const c = parseConfig(
      `entries:\n  img:\n    image: { name: debian@sha256:${"a".repeat(64)}, store: [http://a/s, http://b/s], insecure: true }\n    kernel: /k\n`,
      "serve.yaml",
      host,
    );
    const e = c.entries.get("img");
    assert.ok(e?.kind === "image");
    assert.deepEqual(e.image.stores, ["http://a/s", "http://b/s"]);
    assert.equal(e.disk, "ephemeral");
    assert.equal(c.nbd.port, 10809);
  });

  it("a bare .caibx image is refused without insecure: true, and whenever trust is given", () => {
    const entry = (image: string): string =>
      `entries:\n  img:\n    image: ${image}\n    kernel: /k\n`;
    const trusted = problems(
      entry("{ name: /srv/x.caibx, store: /srv/store, trust: [RW" + "A".repeat(54) + "] }"),
    ).join("\n");
    assert.match(
      trusted,
      /serve\.yaml:3: entries\.img\.image\.name: \/srv\/x\.caibx is a bare index \(\.caibx\): it carries no signature, so trust cannot be checked against it; .*set insecure: true/,
    );
    const plain = problems(entry("{ name: x.caibx, store: /srv/store }")).join("\n");
    assert.match(
      plain,
      /serve\.yaml:3: entries\.img\.image\.name: x\.caibx is a bare index \(\.caibx\): it carries no signature, so nothing vouches for it; .*or set insecure: true/,
    );
    const url = problems(
      entry("{ name: http://m/disk.img, store: /srv/store, trust: [RW" + "A".repeat(54) + "] }"),
    ).join("\n");
    assert.match(url, /http:\/\/m\/disk\.img is a plain image URL: it carries no signature/);
    // Explicitly insecure, with no keys: accepted (what --check passes).
    const c = parseConfig(
      entry("{ name: x.caibx, store: /srv/store, insecure: true }"),
      "s.yaml",
      host,
    );
    const e = c.entries.get("img");
    assert.ok(e?.kind === "image");
    assert.deepEqual([e.image.source, e.image.insecure], ["x.caibx", true]);
  });

  it("numbers and booleans are never taken as paths or URLs", () => {
    const p = problems(
      [
        "state: 7",
        "cache: { dir: 8 }",
        "tftp: { root: 9 }",
        "entries:",
        "  k:",
        "    kernel: 42",
        "    initrd: [true]",
        "  c: { chain: 5 }",
        "  s: { sanboot: 6 }",
        "  i: { image: { name: debian, store: 3, trust: [4] }, kernel: /k }",
        "  o: { iso: 10 }",
        "",
      ].join("\n"),
    );
    const expect = [
      "serve.yaml:1: state: expected a string (a path), got a number (7)",
      "serve.yaml:2: cache.dir: expected a string (a path), got a number (8)",
      "serve.yaml:3: tftp.root: expected a string (a path), got a number (9)",
      "serve.yaml:6: entries.k.kernel: expected a string (a path or URL), got a number (42)",
      "serve.yaml:7: entries.k.initrd[0]: expected a string (a path or URL), got a boolean (true)",
      "serve.yaml:8: entries.c.chain: expected a string (a URL), got a number (5)",
      "serve.yaml:9: entries.s.sanboot: expected a string (a URL), got a number (6)",
      "serve.yaml:10: entries.i.image.store: expected a string (a path or URL), got a number (3)",
      "serve.yaml:10: entries.i.image.trust[0]: expected a string (a path or URL), got a number (4)",
      "serve.yaml:11: entries.o.iso: expected an ISO's http(s) URL or file path, got a number (10)",
    ];
    for (const line of expect) {
      assert.ok(
        p.some((x) => x.startsWith(line)),
        `expected "${line}" among:\n${p.join("\n")}`,
      );
    }
    // Free text may be a number: a title, a command line, an entry name.
    const c = parseConfig(
      "entries:\n  '7': { kernel: /k, title: 2024, cmdline: 3 }\ndefault: 7\n",
      "t.yaml",
      host,
    );
    const e = c.entries.get("7");
    assert.ok(e?.kind === "kernel");
    assert.deepEqual([e.title, e.cmdline, c.default], ["2024", "3", "7"]);
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
    const open = parseConfig("ui: { write: true, token: write-secret-1234 }\n", "serve.yaml", host);
    assert.deepEqual(open.ui, { write: true, token: "write-secret-1234", readToken: undefined });
    const closed = parseConfig("ui: { read-token: read-secret-1234 }\n", "serve.yaml", host);
    assert.deepEqual(closed.ui, { write: false, token: undefined, readToken: "read-secret-1234" });
  });

  it("needs an interface for DHCP and a range for full mode; reports YAML syntax errors with a line", () => {
    const p = problems("dhcp: { mode: full }\n");
    assert.ok(p.some((x) => /needs listen\.interface/.test(x)));
    assert.ok(p.some((x) => /full mode needs range/.test(x)));
    assert.match(problems("entries:\n  a: [\n")[0], /^serve\.yaml:\d+: /);
  });
  it("is pure: what it knows of the host comes from the probe it is given", () => {
    const c = parseConfig(
      "tftp: { enabled: true }\nentries:\n  k: { kernel: /boot/k }\n",
      "h.yaml",
      fakeHost({ "/boot/k": "", "/usr/share/ipxe/ipxe.efi": "" }),
    );
    assert.deepEqual(c.tftp.firstStages, { "uefi-x86_64": "/usr/share/ipxe/ipxe.efi" });
    assert.deepEqual(c.tftp.ipxeFiles, { "ipxe.efi": "/usr/share/ipxe/ipxe.efi" });
    assert.deepEqual(c.warnings, [], "the kernel exists on this host");
    const elsewhere = parseConfig("entries:\n  k: { kernel: /boot/k }\n", "h.yaml", fakeHost());
    assert.match(
      elsewhere.warnings[0],
      /h\.yaml:2: entries\.k\.kernel: file \/boot\/k does not exist/,
    );
    const token = fakeHost({ "/etc/inetboot/token": "a-token-from-a-file\n" });
    const t = parseConfig(
      "ui: { write: true, token-file: /etc/inetboot/token }\n",
      "h.yaml",
      token,
    );
    assert.equal(t.ui.token, "a-token-from-a-file");
  });

  it("an ISO entry's cmdline adds to the recipe's line (at the end, or where it places {recipe}); cmdline-replace replaces it; lazy is a boolean, on by default", () => {
    const c = parseConfig(
      'entries:\n  a: { iso: /a.iso, cmdline: "console=ttyS0" }\n  b: { iso: /a.iso, cmdline: "quiet {recipe} console=ttyS0", lazy: false }\n  r: { iso: /a.iso, cmdline-replace: "boot=live quiet" }\n',
      "h.yaml",
      fakeHost({ "/a.iso": "" }),
    );
    assert.deepEqual(c.warnings, []);
    // A line written when cmdline: replaced the recipe's: said, with the way to keep it whole.
    const old = parseConfig(
      'entries:\n  o: { iso: /a.iso, cmdline: "boot=casper url={iso} quiet" }\n',
      "h.yaml",
      fakeHost({ "/a.iso": "" }),
    );
    assert.equal(old.warnings.length, 1, old.warnings.join("\n"));
    assert.match(
      old.warnings[0],
      /h\.yaml:2: entries\.o\.cmdline: is added to the recipe's command line.*write cmdline-replace: instead/,
    );
    const r = c.entries.get("r");
    assert.ok(r?.kind === "iso");
    assert.equal(r.cmdline, "boot=live quiet");
    const both = problems(
      'entries:\n  a: { iso: /a.iso, cmdline: "x", cmdline-replace: "y" }\n  b: { iso: /a.iso, cmdline-replace: "{recipe} y" }\n',
    );
    assert.ok(
      both.some((x) => /entries\.a\.cmdline-replace: give cmdline .* not both/.test(x)),
      both.join("\n"),
    );
    assert.ok(
      both.some((x) => /entries\.b\.cmdline-replace: .*has no \{recipe\}/.test(x)),
      both.join("\n"),
    );
    const [a, b] = [c.entries.get("a"), c.entries.get("b")];
    assert.ok(a?.kind === "iso" && b?.kind === "iso");
    assert.equal(a.cmdline, "{recipe} console=ttyS0");
    assert.equal(b.cmdline, "quiet {recipe} console=ttyS0");
    assert.equal(a.lazy, true);
    assert.equal(b.lazy, false);
    assert.ok(
      problems("entries:\n  a: { iso: /a.iso, lazy: maybe }\n").some((x) => /lazy/.test(x)),
    );
  });

  it("an exit entry: a code (0–255) and an optional message; keys of other kinds say whose they are", () => {
    const c = parseConfig(
      'entries:\n  away: { exit: 1 }\n  retired: { exit: { code: 2, message: "Retired, see the wiki" } }\n',
      "e.yaml",
      host,
    );
    assert.deepEqual(
      [c.entries.get("away"), c.entries.get("retired")].map(
        (e) => e?.kind === "exit" && [e.code, e.message],
      ),
      [
        [1, undefined],
        [2, "Retired, see the wiki"],
      ],
    );
    const p = problems("entries:\n  x: { exit: 300 }\n  y: { exit: 0, sha256: abc }\n");
    assert.match(
      p.join("\n"),
      /serve\.yaml:2: entries\.x\.exit: expected a whole number from 0 to 255/,
    );
    assert.match(p.join("\n"), /entries\.y\.sha256: sha256 is for iso entries/);
  });
});

describe("footguns: warnings for plans that cannot boot", () => {
  const files = {
    "/usr/lib/ipxe/undionly.kpxe": "",
    "/usr/lib/ipxe/ipxe.efi": "",
    "/srv/vmlinuz": "",
    "/srv/initrd.img": "",
    "/keys/release.pub": "",
  };
  const resolved = new Map<string, string[] | null>([
    ["boot.lab.example", ["10.99.0.1"]],
    ["elsewhere.example", ["192.0.2.7"]],
    ["localhost", ["127.0.0.1", "::1"]],
    ["nowhere.invalid", null],
  ]);
  const probe = fakeHost(files, undefined, { resolved, addresses: ["127.0.0.1", "10.99.0.1"] });
  const GOOD = `listen: { interface: br0, address: 10.99.0.1 }
dhcp: { mode: proxy }
tftp: { enabled: true }
http: { port: 8080, publicUrl: "http://boot.lab.example:8080" }
entries:
  hello: { kernel: /srv/vmlinuz, initrd: [/srv/initrd.img] }
  disk:
    image: { name: os, store: /store, trust: [/keys/release.pub] }
    kernel: /srv/vmlinuz
    initrd: [/srv/initrd.img]
`;
  const warnings = (text: string, host = probe): string[] =>
    parseConfig(text, "serve.yaml", host).warnings;

  it("a good configuration gets none", () => {
    assert.deepEqual(warnings(GOOD), []);
    assert.deepEqual(warnings(GOOD.replace("boot.lab.example", "10.99.0.1")), []);
  });

  it("TFTP off while DHCP answers PXE firmware (even where iPXE is installed)", () => {
    const off = warnings(GOOD.replace("tftp: { enabled: true }", "tftp: { enabled: false }"));
    assert.equal(off.length, 1);
    assert.match(
      off[0],
      /^serve\.yaml:3: tftp\.enabled: TFTP is off while DHCP \(proxy\) answers PXE firmware: BIOS and UEFI PXE ROMs fetch their first stage .* over TFTP only.*Set tftp: \{ enabled: true \}$/,
    );
    const absent = warnings(GOOD.replace("tftp: { enabled: true }\n", ""));
    assert.match(absent[0], /^serve\.yaml:2: dhcp\.mode: TFTP is off while DHCP \(proxy\)/);
    const noDhcp = GOOD.replace("dhcp: { mode: proxy }", "dhcp: { mode: off }");
    assert.deepEqual(warnings(noDhcp.replace("enabled: true", "enabled: false")), []);
  });

  it("no iPXE first stage for plain PXE machines", () => {
    const bare = fakeHost(
      { "/srv/vmlinuz": "", "/srv/initrd.img": "", "/keys/release.pub": "" },
      undefined,
      { resolved, addresses: ["10.99.0.1"] },
    );
    const w = warnings(GOOD, bare);
    assert.equal(w.length, 1);
    assert.match(
      w[0],
      /^serve\.yaml:3: tftp: no iPXE first stage for bios and uefi-x86_64 .*apt install ipxe/,
    );
  });

  it("http.publicUrl that is not this machine, does not resolve, or is loopback", () => {
    const url = (u: string): string[] => warnings(GOOD.replace("http://boot.lab.example:8080", u));
    assert.match(
      url("http://elsewhere.example:8080")[0],
      /^serve\.yaml:4: http\.publicUrl: elsewhere\.example is 192\.0\.2\.7, not an address of this machine \(it has 10\.99\.0\.1\)/,
    );
    assert.match(
      url("http://192.0.2.8:8080")[0],
      /http\.publicUrl: 192\.0\.2\.8 is 192\.0\.2\.8, not an address of this machine/,
    );
    assert.match(
      url("http://nowhere.invalid")[0],
      /http\.publicUrl: nowhere\.invalid does not resolve from this machine \(within 2 s\)/,
    );
    assert.match(url("http://localhost:8080")[0], /localhost is this machine's loopback/);
    assert.match(url("boot.lab.example:8080")[0], /is not an http:\/\/ URL/);
    // Parsed without loadConfig's lookup: a name is left alone.
    assert.deepEqual(
      warnings(GOOD.replace("boot.lab", "other.lab"), fakeHost(files, undefined)),
      [],
    );
  });

  it("HTTP bound where machines cannot reach it", () => {
    const lo = warnings(
      GOOD.replace('port: 8080, publicUrl: "http://boot.lab.example:8080"', "address: 127.0.0.1"),
    );
    assert.match(
      lo[0],
      /^serve\.yaml:4: http\.address: HTTP listens on 127\.0\.0\.1 only, while DHCP sends machines to it/,
    );
    const other = warnings(
      GOOD.replace('port: 8080, publicUrl: "http://boot.lab.example:8080"', "address: 10.99.0.9"),
    );
    assert.match(
      other[0],
      /machines are sent to http:\/\/10\.99\.0\.1:8080, but HTTP listens on 10\.99\.0\.9 only/,
    );
  });

  it("an image entry with kernel: and no initrd cannot mount its NBD root", () => {
    const none = warnings(GOOD.replace("    initrd: [/srv/initrd.img]\n", ""));
    assert.equal(none.length, 1);
    assert.match(
      none[0],
      /^serve\.yaml:9: entries\.disk\.kernel: no initrd: a kernel alone cannot mount its root over NBD/,
    );
    const overlay = warnings(
      GOOD.replace("    initrd: [/srv/initrd.img]\n", "    nbd-overlay: true\n"),
    );
    assert.match(
      overlay[0],
      /nbd-overlay: true adds to an initramfs-tools initrd, and this entry has none/,
    );
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
    host,
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
