import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { bootScript, errorScript, renderIpxe } from "./ipxe-render.ts";

describe("iPXE rendering of boot plans", () => {
  it("a kernel plan: named initrds on the command line, each fetched, then boot", () => {
    const s = renderIpxe({
      kind: "kernel",
      title: "Debian ${evil}",
      entry: "deb",
      kernel: "http://s/files/deb/kernel?mac=1",
      initrds: ["http://s/files/deb/initrd/0?mac=1", "http://s/files/deb/initrd/1?mac=1"],
      cmdline: "console=ttyS0\nroot=/dev/nbd0",
    });
    assert.match(s, /^#!ipxe\necho inetboot: booting Debian \$ \{evil\}\n/);
    assert.match(
      s,
      /\nkernel http:\/\/s\/files\/deb\/kernel\?mac=1 initrd=initrd0\.img initrd=initrd1\.img console=ttyS0 root=\/dev\/nbd0 \|\| goto failed\n/,
    );
    assert.match(
      s,
      /\ninitrd --name initrd1\.img http:\/\/s\/files\/deb\/initrd\/1\?mac=1 \|\| goto failed\n/,
    );
    assert.match(s, /\nboot \|\| goto failed\n.*:failed\necho inetboot: booting deb failed/s);
  });

  it("menus, chains, SAN boots, local, shell, exit, errors and waits", () => {
    const menu = renderIpxe({
      kind: "menu",
      title: "Lab",
      items: [
        { name: "a", title: "A" },
        { name: "local", title: "Local disk" },
      ],
      timeoutSeconds: 5,
      defaultItem: "a",
      entryUrl: "http://s/ipxe/entry/{name}?mac=1",
    });
    assert.match(menu, /\nitem a A\nitem local Local disk\n/);
    assert.match(menu, /\nchoose --timeout 5000 --default a selected \|\| goto cancel\n/);
    assert.match(menu, /\nchain --autofree http:\/\/s\/ipxe\/entry\/\$\{selected\}\?mac=1 /);
    assert.match(
      renderIpxe({ kind: "chain", url: "http://x/y" }),
      /\nchain --autofree http:\/\/x\/y \|\| goto failed\n/,
    );
    assert.match(
      renderIpxe({ kind: "sanboot", url: "http://x/d.iso" }),
      /\nsanboot http:\/\/x\/d\.iso \|\|/,
    );
    assert.match(
      renderIpxe({ kind: "sanboot", url: "http://x/d.iso", title: "Rescue", noDescribe: true }),
      /\necho Booting Rescue from its own boot record \(sanboot\)\nsanboot --no-describe http/,
    );
    assert.match(renderIpxe({ kind: "local" }), /\nexit\n$/);
    assert.equal(renderIpxe({ kind: "shell" }), "#!ipxe\nshell\n");
    assert.equal(
      renderIpxe({ kind: "exit", code: 1, message: "retired" }),
      "#!ipxe\necho inetboot: retired\nexit 1\n",
    );
    assert.match(errorScript("no\nway"), /^#!ipxe\necho inetboot: no way\n.*\nshell\n$/s);
    assert.match(
      renderIpxe({
        kind: "wait",
        message: "checking",
        url: "http://s/ipxe/boot?x=${y}",
        seconds: 5,
      }),
      /\nsleep 5\nchain --replace --autofree http:\/\/s\/ipxe\/boot\?x=%24\{y\}\n$/,
    );
  });

  it("the first script reports iPXE's facts and the labels it was given", () => {
    const s = bootScript("http://s:8080", { rack: "r 7" });
    assert.match(
      s,
      /chain --autofree http:\/\/s:8080\/ipxe\/boot\?mac=\$\{netX\/mac:hexhyp\}.*&rack=r%207 /,
    );
  });
});
