// The installable artifacts run where a user puts them: the npm package from node_modules (no
// type stripping there), the single executable with no Node on PATH (its pack worker and
// sockopt's binding travel inside it), and a checkout's npx without npm's engine warnings.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { npmTarball, seaBinary, seaBinaryFor } from "./artifacts.ts";
import {
  CLI,
  REPO,
  requireFile,
  requireOrSkip,
  requireTool,
  run,
  tempDir,
  textLike,
} from "./helpers.ts";
import type { Scope } from "./helpers.ts";
import { createLan, requireNetns, startServe } from "./netns.ts";

/** --help, keygen, a signed pack and serve --check, run as `command`; returns the index's name. */
async function exercise(command: string[], dir: string, env: NodeJS.ProcessEnv): Promise<string> {
  const [cmd, ...pre] = command;
  const cli = async (args: string[]): Promise<string> => {
    const r = await run(cmd, [...pre, ...args], { cwd: dir, env });
    assert.equal(r.code, 0, `inetboot ${args.join(" ")}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    return r.stdout + r.stderr;
  };
  assert.match(await cli(["--help"]), /Usage: inetboot .*\n[\s\S]*serve \[options\]/);
  await cli(["keygen", "--out", "key"]);
  writeFileSync(join(dir, "disk.img"), textLike(3 << 20, 7));
  assert.match(
    await cli(["pack", "disk.img", "--store", "store", "--name", "demo", "--key", "key"]),
    /release +store\/releases\/demo\/1\.json/,
  );
  writeFileSync(
    join(dir, "serve.yaml"),
    "state: ./state\nentries:\n  demo: { image: { store: ./store, name: demo, trust: [key.pub] } }\ndefault: demo\n",
  );
  assert.match(await cli(["serve", "--config", "serve.yaml", "--check"]), /serve\.yaml: OK/);
  const [index] = readdirSync(join(dir, "store", "indexes"));
  return index;
}

/** The index name the checkout's own pack gives the same disk (the chunks must not differ). */
async function checkoutIndex(t: Scope): Promise<string> {
  const dir = tempDir(t);
  return exercise([process.execPath, CLI], dir, process.env);
}

/**
 * What `serve` with TFTP on interface lo prints in a network namespace of its own (root), killed
 * once it has started or failed, within 60 s.
 */
async function tftpOnLo(command: string[], dir: string): Promise<string> {
  writeFileSync(
    join(dir, "tftp.yaml"),
    "state: ./state\nlisten: { interface: lo }\ntftp: { enabled: true }\nhttp: { port: 8080 }\n" +
      "entries:\n  shell: { shell: true }\ndefault: shell\n",
  );
  const script = 'ip link set lo up && exec env PATH="$0" "$@" serve --config tftp.yaml';
  const child = spawn("unshare", ["-n", "sh", "-c", script, join(dir, "bin"), ...command], {
    cwd: dir,
  });
  let output = "";
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 60_000);
    const collect = (d: Buffer): void => {
      output += d.toString();
      if (/TFTP +port 69|^inetboot: /m.test(output)) setTimeout(resolve, 500); // + stderr's rest
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  child.kill("SIGKILL");
  return output;
}

/**
 * The executable's sockopt binding was loaded from its asset and called: TFTP runs, tied to lo,
 * or (qemu-user 7.2 does not translate SO_BINDTOIFINDEX) warning that the kernel refused the
 * call; never the reason of an executable without the binding.
 */
const tiedOrRefused = /TFTP +port 69/;
const noBinding = /no native sockopt binding/;

describe("installable artifacts", () => {
  it("the npm package installs into an empty folder and runs from node_modules", async (t) => {
    const tgz = npmTarball();
    const dir = tempDir(t);
    const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
    writeFileSync(
      join(dir, "package.json"),
      '{ "name": "user-project", "private": true, "allowScripts": { "sockopt": true } }\n',
    );
    const install = await run(
      "npm",
      ["install", "--no-audit", "--no-fund", "--prefer-offline", tgz],
      { cwd: dir, env },
    );
    assert.equal(install.code, 0, install.stderr);
    assert.doesNotMatch(install.stderr, /EBADENGINE/);
    const pkg = join(dir, "node_modules", "inetboot");
    assert.ok(existsSync(join(pkg, "dist", "cli", "main.js")), "the package carries JavaScript");
    assert.ok(!existsSync(join(pkg, "src")), "and not the TypeScript sources");
    const index = await exercise([join(dir, "node_modules", ".bin", "inetboot")], dir, env);
    assert.equal(
      index,
      await checkoutIndex(t),
      "the package packs the same chunks as the checkout",
    );
  });

  it("the single executable runs --help, pack and serve --check with no Node on PATH", async (t) => {
    const sea = await seaBinary(t);
    if (!sea) return;
    const dir = tempDir(t);
    const bare = join(dir, "bin");
    mkdirSync(bare);
    const env = { PATH: bare, HOME: dir, LANG: "C.UTF-8" };
    const index = await exercise([sea], dir, env);
    assert.equal(index, await checkoutIndex(t), "its bundled pack worker cuts the same chunks");
  });

  it("the single executable serves on a LAN, its DHCP bound to the one interface", async (t) => {
    if (!requireNetns(t)) return;
    const sea = await seaBinary(t);
    if (!sea) return;
    const lan = createLan(t, "10.97.3");
    const dir = tempDir(t);
    const config = join(dir, "serve.yaml");
    writeFileSync(
      config,
      [
        `state: ${join(dir, "state")}`,
        "listen: { interface: br0 }",
        "dhcp: { mode: proxy }",
        "http: { port: 8080 }",
        "entries:\n  shell: { shell: true }",
        "default: shell",
        "",
      ].join("\n"),
    );
    const serve = await startServe(lan, config, {}, [
      "/usr/bin/env",
      `PATH=${join(dir, "none")}`,
      sea,
    ]);
    const r = execFileSync(
      "ip",
      ["netns", "exec", lan.server, "curl", "-sf", "http://10.97.3.1:8080/boot.ipxe"],
      {
        encoding: "utf8",
      },
    );
    assert.match(r, /^#!ipxe/);
    assert.doesNotMatch(serve.stderr(), /cannot restrict DHCP to one interface/);
  });

  it("the linux-arm64 executable runs under qemu-user", { timeout: 240_000 }, async (t) => {
    if (process.arch === "arm64") {
      t.skip("this machine is arm64: the tests above run its executable natively");
      return;
    }
    // qemu-user runs the aarch64 binary; -L gives it the arm64 glibc and libstdc++ (the cross
    // toolchain's), and the cross compiler builds sockopt's binding for it.
    const sysroot = "/usr/aarch64-linux-gnu";
    if (!requireTool(t, "qemu-aarch64-static", "qemu-user-static")) return;
    if (!requireTool(t, "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")) return;
    if (!requireFile(t, `${sysroot}/lib/ld-linux-aarch64.so.1`, "libc6-arm64-cross")) return;
    if (!requireFile(t, `${sysroot}/lib/libstdc++.so.6`, "libstdc++6-arm64-cross")) return;
    const sea = await seaBinaryFor(t, "arm64");
    if (!sea) return;
    const EM_AARCH64 = 183;
    const image = readFileSync(sea);
    assert.equal(image.readUInt16LE(18), EM_AARCH64, "the executable is an aarch64 ELF");
    const binding = readFileSync(join(dirname(sea), "sea", "sockopt.node"));
    assert.equal(binding.readUInt32BE(0), 0x7f454c46, "sockopt's binding is an ELF file");
    assert.equal(binding.readUInt16LE(18), EM_AARCH64, "cross-compiled for aarch64");
    assert.ok(image.includes(binding), "and carried inside the executable");

    const qemu = execFileSync("sh", ["-c", "command -v qemu-aarch64-static"], {
      encoding: "utf8",
    }).trim();
    const dir = tempDir(t);
    const bare = join(dir, "bin");
    mkdirSync(bare);
    const env = { PATH: bare, HOME: dir, LANG: "C.UTF-8" };
    const index = await exercise([qemu, "-L", sysroot, sea], dir, env);
    assert.equal(index, await checkoutIndex(t), "its pack worker cuts the same chunks on arm64");
    if (process.getuid?.() === 0) {
      const served = await tftpOnLo([qemu, "-L", sysroot, sea], dir);
      assert.match(served, tiedOrRefused);
      assert.doesNotMatch(served, noBinding);
    }
  });

  it("a checkout's npx prints no npm warnings, even under the host's older Node", async (t) => {
    const hostNode = ["/usr/bin/node", "/usr/local/bin/node"].find((p) => existsSync(p));
    if (!hostNode) {
      requireOrSkip(t, "no Node of the host's own besides the pinned one");
      return;
    }
    const env = { ...process.env, PATH: `${dirname(hostNode)}:/usr/bin:/bin` };
    const r = await run("npx", ["--offline", "inetboot", "--help"], { cwd: REPO, env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Usage: inetboot/);
    assert.doesNotMatch(r.stderr, /npm warn/i);
  });
});
