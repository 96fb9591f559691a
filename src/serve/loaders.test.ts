import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, fakeHost, parseConfig } from "./config.ts";
import { chooseLoader, firmwareArchNames } from "./plan.ts";

const SHIM = "/usr/lib/shim/shimx64.efi.signed";
const GRUB = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";
const DI = "/usr/lib/debian-installer/images/12/arm64/text/debian-installer/arm64";
const all = fakeHost({
  "/usr/lib/ipxe/ipxe.efi": "",
  [SHIM]: "",
  [GRUB]: "",
  [`${DI}/bootnetaa64.efi`]: "",
  [`${DI}/grubaa64.efi`]: "",
});
const none = fakeHost({ "/usr/lib/ipxe/ipxe.efi": "" });
const BASE = `entries: { hello: { kernel: /k } }\ndefault: hello\n`;

function problems(text: string, host = all): string[] {
  try {
    parseConfig(text, "serve.yaml", host);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail("expected the configuration to be refused");
}

const facts = (mac: string, fw: { kind: string; cpu: string; arch: number }) => ({
  mac,
  arch: firmwareArchNames(fw),
  labels: {},
});
const X64 = { kind: "uefi", cpu: "x86_64", arch: 7 };
const ARM = { kind: "uefi", cpu: "arm64", arch: 11 };

describe("boot loaders: iPXE, GRUB, shim → GRUB", () => {
  it("finds Debian's shim and GRUB; iPXE stays the default on x86, arm64 gets shim → GRUB", () => {
    const c = parseConfig(BASE, "serve.yaml", all);
    assert.deepEqual(c.loaders.shim, { x86_64: SHIM, arm64: `${DI}/bootnetaa64.efi` });
    assert.deepEqual(c.loaders.grub, { x86_64: GRUB, arm64: `${DI}/grubaa64.efi` });
    assert.equal(chooseLoader(c, facts("52:54:00:00:00:01", X64), "uefi-x86_64").loader, "ipxe");
    assert.equal(chooseLoader(c, facts("52:54:00:00:00:01", ARM), "uefi-arm64").loader, "shim");
    const bare = parseConfig(BASE, "serve.yaml", none);
    assert.equal(chooseLoader(bare, facts("52:54:00:00:00:01", ARM), "uefi-arm64").loader, "ipxe");
    // An arm64 iPXE of the user's own keeps iPXE the default there.
    const own = parseConfig(
      `${BASE}tftp: { firstStages: { uefi-arm64: /srv/ipxe-arm64.efi } }\n`,
      "serve.yaml",
      all,
    );
    assert.equal(chooseLoader(own, facts("52:54:00:00:00:01", ARM), "uefi-arm64").loader, "ipxe");
  });

  it("the most specific rule naming a loader wins over the firmware's default", () => {
    const c = parseConfig(
      `${BASE}loaders: { uefi-x86_64: grub }
machines:
  - { match: { arch: uefi-x86_64 }, boot: hello }
  - { match: { mac: "52:54:00:00:00:02" }, boot: hello, loader: shim }
  - { match: { arch: x86_64 }, boot: hello, loader: ipxe }
`,
      "serve.yaml",
      all,
    );
    const pick = (mac: string) => chooseLoader(c, facts(mac, X64), "uefi-x86_64");
    assert.deepEqual(pick("52:54:00:00:00:02"), { loader: "shim", rule: "machines[1]" });
    assert.deepEqual(pick("52:54:00:00:00:03"), { loader: "ipxe", rule: "machines[2]" });
    const noRule = parseConfig(`${BASE}loaders: { uefi-x86_64: grub }\n`, "serve.yaml", all);
    assert.deepEqual(chooseLoader(noRule, facts("52:54:00:00:00:03", X64), "uefi-x86_64"), {
      loader: "grub",
      rule: "loaders.uefi-x86_64",
    });
  });

  it("says which package is missing, refuses GRUB for BIOS and unknown loaders", () => {
    assert.match(
      problems(`${BASE}loaders: { uefi-x86_64: shim }\n`, none).join(),
      /install shim-signed|install grub-efi-amd64-signed/,
    );
    assert.match(
      problems(`${BASE}loaders: { bios: grub }\n`).join(),
      /BIOS machines boot through iPXE/,
    );
    assert.match(problems(`${BASE}loaders: { uefi-arm64: lilo }\n`).join(), /loaders\.uefi-arm64/);
    assert.match(
      problems(
        `${BASE}machines: [{ match: { arch: uefi-arm64 }, boot: hello, loader: shim }]\n`,
        none,
      ).join(),
      /machines\[0\]\.loader.*debian-installer-12-netboot-arm64/,
    );
  });

  it("takes shim and GRUB from configured paths, warning when they are not there", () => {
    const c = parseConfig(
      `${BASE}loaders: { shim: { x86_64: /lab/shimx64.efi }, grub: { x86_64: /lab/grubx64.efi } }\n`,
      "serve.yaml",
      none,
    );
    assert.equal(c.loaders.shim.x86_64, "/lab/shimx64.efi");
    assert.ok(
      c.warnings.some((w) => /\/lab\/grubx64\.efi does not exist/.test(w)),
      c.warnings.join(),
    );
  });
});
