// What GRUB fetches over TFTP from a running boot server, fetched here by a plain TFTP client
// (RFC 1350 lock-step): the bootstrap at each network GRUB's prefix, the machine's plan and a
// menu's choices rendered per machine, the entries' kernels and initrds at their HTTP paths —
// and what a hostile LAN can send in those paths: long and malformed facts, bad escapes, paths
// out of the tree.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import type { TestContext } from "node:test";
import { BootServer } from "../src/serve/boot-server.ts";
import { fakeHost, parseConfig } from "../src/serve/config.ts";
import { decodeTftp, encodeTftp, Op } from "../src/tftp/protocol.ts";
import { tempDir, textLike } from "./helpers.ts";

const MAC = "52:54:00:6b:00:01";
const ONCE_MAC = "52:54:00:6b:00:03";

/** A whole file by TFTP (octet, 512-byte blocks), or the server's error message. */
async function tftpGet(port: number, filename: string): Promise<{ data?: Buffer; error?: string }> {
  const s = createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  const parts: Buffer[] = [];
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer for ${filename}`)), 10_000);
      s.on("message", (msg, rinfo) => {
        const p = decodeTftp(msg);
        if (p.op === Op.ERROR) {
          clearTimeout(timer);
          resolve({ error: p.message });
        } else if (p.op === Op.DATA) {
          if (p.block === parts.length + 1) parts.push(p.data);
          s.send(encodeTftp({ op: Op.ACK, block: p.block }), rinfo.port, rinfo.address);
          if (p.data.length < 512) {
            clearTimeout(timer);
            resolve({ data: Buffer.concat(parts) });
          }
        }
      });
      s.send(
        encodeTftp({ op: Op.RRQ, filename, mode: "octet", options: new Map() }),
        port,
        "127.0.0.1",
      );
    });
  } finally {
    s.close();
  }
}

async function server(t: TestContext): Promise<{ srv: BootServer; kernel: Buffer; dir: string }> {
  const dir = tempDir(t);
  const kernel = textLike(300_000, 7);
  writeFileSync(join(dir, "vmlinuz"), kernel);
  writeFileSync(join(dir, "initrd.img"), "initrd bytes\n");
  writeFileSync(join(dir, "secret"), "not for TFTP\n");
  const config = parseConfig(
    `listen: { address: 127.0.0.1 }
dhcp: { mode: off }
tftp: { enabled: true, port: 0, root: ${join(dir, "tftproot")} }
http: { port: 0, address: 127.0.0.1 }
state: ${join(dir, "state")}
entries:
  hello:
    title: It's hello
    kernel: ${join(dir, "vmlinuz")}
    initrd: [${join(dir, "initrd.img")}]
    cmdline: console=ttyS0 quiet
  start: { menu: [hello, local], default: hello, timeout: 3 }
  reinstall: { kernel: ${join(dir, "vmlinuz")}, once: true }
machines:
  - { match: { mac: "${MAC}" }, boot: hello }
  - { match: { mac: "${ONCE_MAC}" }, boot: reinstall }
default: start
`,
    join(dir, "serve.yaml"),
    fakeHost({ [join(dir, "vmlinuz")]: "", [join(dir, "initrd.img")]: "" }),
  );
  const srv = new BootServer(config);
  await srv.start();
  t.after(() => srv.stop());
  return { srv, kernel, dir };
}

const text = (r: { data?: Buffer; error?: string }): string => {
  assert.ok(r.data, `expected a file, got the error ${r.error}`);
  return r.data.toString();
};

it("GRUB over TFTP: the bootstrap at every prefix, per-machine plans and menus, the entry's files", async (t) => {
  const { srv, kernel } = await server(t);
  const port = srv.tftpPort;
  for (const prefix of ["grub", "/grub", "debian-installer/arm64/grub", "boot/grub"]) {
    assert.match(
      text(await tftpGet(port, `${prefix}/grub.cfg`)),
      /configfile "\/inetboot\/grub\/boot\?mac=\$\{net_default_mac\}/,
    );
  }
  const facts = "buildarch=x86_64&platform=efi";
  const plan = text(await tftpGet(port, `/inetboot/grub/boot?mac=${MAC}&${facts}`));
  assert.match(plan, /echo 'inetboot: booting It'\\''s hello'/);
  const kernelPath = /if linux '([^']+)' 'console=ttyS0' 'quiet'; then/.exec(plan)?.[1];
  assert.ok(kernelPath, plan);
  assert.match(kernelPath, /^\/files\/hello\/kernel\?/);
  const initrdPath = /initrd '([^']+)'/.exec(plan)?.[1] as string;
  assert.deepEqual((await tftpGet(port, kernelPath)).data, kernel);
  assert.equal(text(await tftpGet(port, initrdPath)), "initrd bytes\n");

  // Another machine gets the menu; its choices are plans of their own.
  const menu = text(await tftpGet(port, `/inetboot/grub/boot?mac=52:54:00:6b:00:02&${facts}`));
  assert.match(menu, /set timeout=3\nset default='hello'/);
  const choice = /configfile '(\/inetboot\/grub\/entry\/hello\?[^']+)'/.exec(menu)?.[1];
  assert.ok(choice, menu);
  assert.match(text(await tftpGet(port, choice)), /if linux '\/files\/hello\/kernel/);

  const stages = srv.events.events({ limit: 1000 }).map((e) => e.stage);
  for (const s of ["grub-config", "grub-plan", "grub-entry", "tftp-kernel", "tftp-initrd"])
    assert.ok(stages.includes(s), `no ${s} in ${stages.join(",")}`);
  const m = srv.events.machine(MAC);
  assert.equal(m?.loader, "GRUB");
  assert.equal(m?.entry, "hello");
});

it("a one-shot entry under GRUB is used up when its kernel is fetched over TFTP; the next plan leaves for the local disk", async (t) => {
  const { srv } = await server(t);
  const port = srv.tftpPort;
  const ask = `/inetboot/grub/boot?mac=${ONCE_MAC}&buildarch=x86_64&platform=efi`;
  const first = text(await tftpGet(port, ask));
  const kernel = /if linux '([^']+)'/.exec(first)?.[1];
  assert.ok(kernel, first);
  assert.match(text(await tftpGet(port, ask)), /if linux /, "not used up by the plan alone");
  assert.ok((await tftpGet(port, kernel)).data);
  const after = text(await tftpGet(port, ask));
  assert.match(after, /booting from the local disk'\nexit\n$/);
});

it("GRUB paths from a hostile LAN: long and malformed facts, bad escapes, paths out of the tree", async (t) => {
  const { srv } = await server(t);
  const port = srv.tftpPort;
  const before = process.memoryUsage().rss;
  // Facts far past their bounds: the plan is still a plan, the record keeps bounded text.
  const labels = Array.from({ length: 400 }, (_, i) => `l${i}=${"v".repeat(60)}`).join("&");
  const long = await tftpGet(
    port,
    `/inetboot/grub/boot?mac=${"f".repeat(300)}&hostname=${"h".repeat(400)}&${labels}`,
  );
  assert.match(text(long), /# inetboot: this machine's boot plan/);
  for (const bad of [
    "/inetboot/grub/entry/%E0%A4%A",
    "/inetboot/grub/entry/nope",
    "/files/%ZZ/kernel",
    "/files/hello/initrd/7",
    "/files/nope/kernel",
    "/files/../secret",
    "../grub/grub.cfg",
    "../secret",
    "grub/../../secret",
  ]) {
    const r = await tftpGet(port, bad);
    assert.ok(r.error, `${bad} was served: ${r.data?.toString().slice(0, 80)}`);
    assert.doesNotMatch(r.error, /internal|TypeError|undefined/i, `${bad}: ${r.error}`);
  }
  // A datagram's worth of name: bounded work, no crash, an answer.
  const huge = await tftpGet(port, `/inetboot/grub/boot?${"x=1&".repeat(10_000)}`);
  assert.ok(huge.data ?? huge.error);
  assert.ok(process.memoryUsage().rss - before < 64 * 1024 * 1024);
  assert.equal(text(await tftpGet(port, "grub/grub.cfg")).length > 0, true, "still serving");
});
