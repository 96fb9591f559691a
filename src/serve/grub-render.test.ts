import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { grubBootstrap, grubWord, renderGrub } from "./grub-render.ts";

const paths = { base: "http://10.0.0.1:8080", query: "mac=52-54-00-12-34-56" };
/** What GRUB must never be left with: a script that neither boots nor says why. */
const SAYS_WHY = /echo 'inetboot: [^']+'\n/;

describe("GRUB rendering of boot plans", () => {
  it("words are single-quoted: GRUB expands nothing in them, quotes and newlines survive", () => {
    assert.equal(grubWord("a b"), "'a b'");
    assert.equal(grubWord("it's ${x}; boot"), "'it'\\''s ${x}; boot'");
    assert.equal(grubWord("two\nlines"), "'two lines'");
  });

  it("the bootstrap asks for the machine's own plan with GRUB's facts in the path", () => {
    const s = grubBootstrap();
    assert.match(
      s,
      /\nconfigfile "\/inetboot\/grub\/boot\?mac=\$\{net_default_mac\}&buildarch=\$\{grub_cpu\}&platform=\$\{grub_platform\}"\n/,
    );
    assert.match(s, /could not get the boot plan of this machine/);
  });

  it("a kernel plan: the files by TFTP at their HTTP paths, each word of the command line quoted", () => {
    const s = renderGrub(
      {
        kind: "kernel",
        title: "Debian's ${evil}",
        entry: "deb",
        kernel: "http://10.0.0.1:8080/files/deb/kernel?mac=1",
        initrds: [
          "http://10.0.0.1:8080/files/deb/initrd/0?mac=1",
          "http://10.0.0.1:8080/files/deb/initrd/1?mac=1",
        ],
        cmdline: "console=ttyS0  root=/dev/nbd0\nnbdroot=10.0.0.1:10809/x",
      },
      paths,
    );
    assert.match(s, /echo 'inetboot: booting Debian'\\''s \$\{evil\}'\n/);
    assert.match(
      s,
      /\nif linux '\/files\/deb\/kernel\?mac=1' 'console=ttyS0' 'root=\/dev\/nbd0' 'nbdroot=10\.0\.0\.1:10809\/x'; then\n {2}if initrd '\/files\/deb\/initrd\/0\?mac=1' '\/files\/deb\/initrd\/1\?mac=1'; then\n {4}boot\n/,
    );
    assert.match(s, /booting deb failed/);
  });

  it("files off this server, chains and SAN boots: a message and the command line, never a silent stop", () => {
    const off = renderGrub(
      {
        kind: "kernel",
        title: "x",
        entry: "x",
        kernel: "http://elsewhere/k",
        initrds: [],
        cmdline: "",
      },
      paths,
    );
    assert.doesNotMatch(off, /linux /);
    assert.match(off, /names files off this server/);
    const chain = renderGrub({ kind: "chain", url: "http://boot.example/x.ipxe" }, paths);
    assert.match(chain, /GRUB cannot chain http:\/\/boot\.example\/x\.ipxe/);
    const san = renderGrub({ kind: "sanboot", url: "http://10.0.0.1:8080/iso/x/x.iso" }, paths);
    assert.match(san, /cannot boot .* as a CD-ROM/);
    for (const s of [off, chain, san]) {
      assert.match(s, /loader: ipxe/);
      assert.match(s, SAYS_WHY);
    }
  });

  it("menus: entries by id, their plans by TFTP with the machine's query; timeout 0 waits", () => {
    const menu = renderGrub(
      {
        kind: "menu",
        title: "Lab",
        items: [
          { name: "a b", title: "A's" },
          { name: "local", title: "Local disk" },
        ],
        timeoutSeconds: 0,
        defaultItem: "local",
        entryUrl: "http://10.0.0.1:8080/ipxe/entry/{name}",
      },
      paths,
    );
    assert.match(menu, /\nset timeout=-1\nset default='local'\n/);
    assert.match(
      menu,
      /\nmenuentry 'A'\\''s' --id 'a b' \{\n {2}configfile '\/inetboot\/grub\/entry\/a%20b\?mac=52-54-00-12-34-56'\n\}\n/,
    );
    const timed = renderGrub(
      { kind: "menu", title: "t", items: [], timeoutSeconds: 7, defaultItem: "", entryUrl: "" },
      paths,
    );
    assert.match(timed, /set timeout=7\n/);
  });

  it("local and exit leave GRUB for the firmware's next boot option; errors and waits say why", () => {
    assert.match(renderGrub({ kind: "local" }, paths), /local disk'\nexit\n$/);
    assert.match(
      renderGrub({ kind: "exit", code: 1, message: "bye" }, paths),
      /'inetboot: bye'\nexit\n$/,
    );
    assert.match(renderGrub({ kind: "shell" }, paths), /command line follows/);
    assert.match(renderGrub({ kind: "error", message: "no MAC" }, paths), /'inetboot: no MAC'\n/);
    const wait = renderGrub(
      {
        kind: "wait",
        message: "checking the ISO",
        url: "http://10.0.0.1:8080/inetboot/grub/boot?mac=1",
        seconds: 5,
      },
      paths,
    );
    assert.match(
      wait,
      /asking again in 5 s'\nsleep 5\nconfigfile '\/inetboot\/grub\/boot\?mac=1'\n$/,
    );
  });
});
