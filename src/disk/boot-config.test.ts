import assert from "node:assert/strict";
import { it } from "node:test";
import { blsDefault, cmdlineValue, grubDefault, grubWords, withoutArgs } from "./boot-config.ts";

const GRUB = `set default="0"
if [ x"\${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
fi
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-u1' {
\tlinux\t/boot/vmlinuz-6.1.0-20-amd64 root=UUID=u1 ro quiet $vt_handoff
\tinitrd\t/boot/initrd.img-6.1.0-20-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-u1' {
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' $menuentry_id_option 'gnulinux-6.1.0-18-amd64-advanced-u1' {
\t\tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=UUID=u1 ro "quoted arg=a b"
\t\tinitrd\t/boot/intel-ucode.img /boot/initrd.img-6.1.0-18-amd64
\t}
}
menuentry 'Memory test' {\n\tlinux16 /boot/memtest86+.bin\n}
`;

it("grub.cfg: the default entry by number, id path, title or saved_entry; $variables dropped", () => {
  const first = grubDefault(GRUB);
  assert.deepEqual(first, {
    kernel: "/boot/vmlinuz-6.1.0-20-amd64",
    initrds: ["/boot/initrd.img-6.1.0-20-amd64"],
    cmdline: "root=UUID=u1 ro quiet",
    from: "grub.cfg 'Debian GNU/Linux'",
  });
  const nested = grubDefault(GRUB.replace('default="0"', 'default="1>0"'));
  assert.equal(nested?.kernel, "/boot/vmlinuz-6.1.0-18-amd64");
  assert.deepEqual(nested?.initrds, ["/boot/intel-ucode.img", "/boot/initrd.img-6.1.0-18-amd64"]);
  assert.equal(nested?.cmdline, "root=UUID=u1 ro quoted arg=a b");
  const byId = grubDefault(
    GRUB.replace(
      'default="0"',
      'default="gnulinux-advanced-u1>gnulinux-6.1.0-18-amd64-advanced-u1"',
    ),
  );
  assert.equal(byId?.kernel, "/boot/vmlinuz-6.1.0-18-amd64");
  const saved = grubDefault(
    GRUB.replace('default="0"', 'default="${saved_entry}"'),
    "# GRUB Environment Block\nsaved_entry=Memory test\n#####",
  );
  assert.equal(saved?.kernel, "/boot/memtest86+.bin");
  // A default that names nothing falls back to the first kernel.
  assert.equal(
    grubDefault(GRUB.replace('default="0"', 'default="9"'))?.kernel,
    "/boot/vmlinuz-6.1.0-20-amd64",
  );
  assert.equal(grubDefault("menuentry 'x' {\n chainloader +1\n}\n"), null);
  assert.throws(() => grubDefault("#".repeat(2 * 1024 * 1024)), /over/);
  assert.deepEqual(grubWords(`linux /k a='b c' "d\\"e" f\\ g # comment`), [
    "linux",
    "/k",
    "a=b c",
    'd"e',
    "f g",
  ]);
});

it("grub.cfg from a hostile image: thousands of entries and deep nesting are bounded", () => {
  const many = Array.from({ length: 5000 }, (_, i) => `menuentry 'e${i}' {\n linux /k${i}\n}`).join(
    "\n",
  );
  assert.equal(grubDefault(many)?.kernel, "/k0");
  const deep = "submenu 'a' {\n".repeat(100) + "menuentry 'x' {\n linux /deep\n}\n";
  assert.doesNotThrow(() => grubDefault(deep));
});

it("BLS entries: the newest version (6.10 after 6.9), options with $kernelopts from grubenv", () => {
  const files = new Map([
    [
      "fedora-6.9.4.conf",
      "title Fedora (6.9.4)\nversion 6.9.4-200.fc40.x86_64\nlinux /vmlinuz-6.9.4\ninitrd /initramfs-6.9.4.img\noptions root=UUID=r ro rhgb\n",
    ],
    [
      "fedora-6.10.1.conf",
      "title Fedora (6.10.1)\nversion 6.10.1-200.fc40.x86_64\nlinux /vmlinuz-6.10.1\ninitrd /initramfs-6.10.1.img\noptions $kernelopts quiet\n",
    ],
    ["broken.conf", "title no kernel\n"],
  ]);
  const e = blsDefault(files, "kernelopts=root=UUID=r ro\n");
  assert.deepEqual(e, {
    kernel: "/vmlinuz-6.10.1",
    initrds: ["/initramfs-6.10.1.img"],
    cmdline: "root=UUID=r ro quiet",
    from: "BLS fedora-6.10.1.conf",
  });
  // grubenv's saved_entry pins an older one.
  assert.equal(blsDefault(files, "saved_entry=fedora-6.9.4\n")?.kernel, "/vmlinuz-6.9.4");
  assert.equal(blsDefault(new Map()), null);
});

it("command line helpers: the last root= wins; root= and BOOT_IMAGE= removed", () => {
  assert.equal(cmdlineValue("root=/dev/sda1 ro root=PARTUUID=p", "root"), "PARTUUID=p");
  assert.equal(
    withoutArgs("BOOT_IMAGE=/k root=x ro rootwait quiet", ["root", "BOOT_IMAGE"]),
    "ro rootwait quiet",
  );
});
