// The Debian package (packaging/deb/build.sh) of the single executable, installed the way users
// install it, in a copy of the minbase Debian tree and a test LAN (never the host's network):
// its contents, modes and conffile; the binary's library needs against Depends; apt in a chroot
// (user, folders, enabled unit) with ExecStart run as the unit runs it (user inetboot, only the
// unit's capabilities) binding DHCP, TFTP and HTTP on the LAN; under systemd in systemd-nspawn:
// apt starts it, systemd-analyze verify, restart, reload, an upgrade keeps an edited
// serve.yaml, stop; remove and purge.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { seaBinary } from "./artifacts.ts";
import { debianRootfs } from "./debian-rootfs.ts";
import { FixtureScope, REPO, requireOrSkip, requireTool, run, runOk, tempDir } from "./helpers.ts";
import { createLan, requireNetns } from "./netns.ts";
import type { TestLan } from "./netns.ts";

const UNIT = "/usr/lib/systemd/system/inetboot.service";
const CONFIG = "/etc/inetboot/serve.yaml";
/** ExecStart of the unit, word for word. */
const EXEC_START = ["/usr/bin/inetboot", "serve", "--config", CONFIG];
/** The unit's AmbientCapabilities (and bounding set), as setpriv and /proc spell them. */
const CAPS = ["net_bind_service", "net_raw"];
/** CAP_NET_BIND_SERVICE (10) and CAP_NET_RAW (13): CapEff/CapAmb in /proc/PID/status. */
const CAP_MASK = (1n << 10n) | (1n << 13n);
/** A clean environment, as systemd gives a service (the host's NODE_* must not leak in). */
const CLEAN_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" };
const APT_ENV = "DEBIAN_FRONTEND=noninteractive";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function debianVersion(): string {
  const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string };
  return pkg.version.replace("-", "~");
}

/** Compares dotted versions: "2.28" < "2.34". */
function versionLess(a: string, b: string): boolean {
  const x = a.split(".").map(Number);
  const y = b.split(".").map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) < (y[i] ?? 0);
  }
  return false;
}

/** The highest symbol version per prefix (GLIBC, GLIBCXX, CXXABI, GCC) the binary needs. */
async function neededVersions(binary: string): Promise<Map<string, string>> {
  const { stdout } = await runOk("objdump", ["-T", binary]);
  const max = new Map<string, string>();
  for (const m of stdout.matchAll(/\b(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9.]+)\b/g)) {
    const seen = max.get(m[1]);
    if (!seen || versionLess(seen, m[2])) max.set(m[1], m[2]);
  }
  return max;
}

/** Polls `check` until it returns a value or `timeoutMs` passes (then throws with `what`). */
async function waitUntil<T>(
  what: string,
  check: () => Promise<T | null>,
  timeoutMs = 20_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== null) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

/** The UDP and TCP ports listened on in the LAN's server namespace. */
async function listening(lan: TestLan): Promise<Set<string>> {
  const { stdout } = await runOk("ip", ["netns", "exec", lan.server, "ss", "-Hltun"]);
  const ports = new Set<string>();
  for (const line of stdout.trim().split("\n").filter(Boolean)) {
    const [proto, , , , local] = line.split(/\s+/);
    ports.add(`${proto}/${local.slice(local.lastIndexOf(":") + 1)}`);
  }
  return ports;
}

/** The iPXE script from the server in the LAN, or null while it does not answer. */
async function bootScript(lan: TestLan, port: number): Promise<string | null> {
  const url = `http://${lan.serverAddress}:${port}/boot.ipxe`;
  const r = await run("ip", ["netns", "exec", lan.server, "curl", "-sf", "-m", "2", url]);
  return r.code === 0 ? r.stdout : null;
}

/** The LAN configuration: proxyDHCP (67, 4011) and TFTP (69) tied to br0, HTTP on port 80. */
function lanConfig(extra = ""): string {
  return [
    "state: /var/lib/inetboot",
    "cache: { dir: /var/cache/inetboot }",
    "listen: { interface: br0 }",
    "dhcp: { mode: proxy }",
    "tftp: { enabled: true }",
    "http: { port: 80 }",
    extra,
  ].join("\n");
}

/** The capability sets, user and no_new_privs of a process, from its /proc status text. */
function processFacts(status: string): { eff: bigint; amb: bigint; uid: string; nnp: string } {
  const field = (name: string): string =>
    new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status)?.[1].trim() ?? "";
  return {
    eff: BigInt(`0x${field("CapEff")}`),
    amb: BigInt(`0x${field("CapAmb")}`),
    uid: field("Uid").split(/\s+/)[1] ?? "",
    nnp: field("NoNewPrivs"),
  };
}

interface Served {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * Runs ExecStart in the tree the way the unit does, in the LAN's server namespace: a fresh sysfs
 * and proc for the chroot (the mounts live in `ip netns exec`'s own mount namespace and go with
 * it), then user and group inetboot with only the unit's capabilities, no_new_privs, a clean
 * environment.
 */
function serveInChroot(lan: TestLan, tree: string, config = CONFIG): Served {
  const capList = CAPS.map((c) => `+${c}`).join(",");
  const script = [
    'mount -t sysfs sysfs "$1/sys"',
    'mount -t proc proc "$1/proc"',
    'tree="$1"; shift',
    'exec chroot "$tree" "$@"',
  ].join(" && ");
  const argv = [
    ...["setpriv", "--reuid", "inetboot", "--regid", "inetboot", "--init-groups"],
    ...["--inh-caps", `-all,${capList}`, "--ambient-caps", `-all,${capList}`],
    ...["--bounding-set", `-all,${capList}`, "--no-new-privs", "--"],
    ...EXEC_START.slice(0, -1),
    config,
  ];
  const child = spawn(
    "ip",
    ["netns", "exec", lan.server, "sh", "-c", script, "sh", tree, ...argv],
    {
      env: CLEAN_ENV,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let text = "";
  child.stdout?.on("data", (d: Buffer) => (text += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (text += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => resolve(code)),
  );
  return { child, output: () => text, exited };
}

/** SIGTERM, then at most 10 s for the exit code (SIGKILL after that). */
async function stop(served: Served): Promise<number | null> {
  served.child.kill("SIGTERM");
  const timer = setTimeout(() => served.child.kill("SIGKILL"), 10_000);
  const code = await served.exited;
  clearTimeout(timer);
  return code;
}

describe("Debian package", { timeout: 600_000 }, () => {
  const fx = new FixtureScope();
  let deb = "";
  let binary = "";
  let tree = "";
  let lan: TestLan;
  let uid = "";

  before(async () => {
    if (process.getuid?.() !== 0) {
      requireOrSkip(fx, "the package test needs root (chroot, network namespaces, apt)");
      return;
    }
    if (!requireTool(fx, "dpkg-deb", "dpkg") || !requireTool(fx, "objdump", "binutils")) return;
    if (!requireTool(fx, "debootstrap", "debootstrap") || !requireTool(fx, "curl", "curl")) return;
    if (!requireTool(fx, "setpriv", "util-linux") || !requireTool(fx, "ss", "iproute2")) return;
    if (!requireNetns(fx)) return;
    const sea = await seaBinary(fx);
    if (!sea) return;
    binary = sea;
    const dir = tempDir(fx, "inetboot-deb-");
    const r = await runOk("bash", [
      join(REPO, "packaging/deb/build.sh"),
      "--binary",
      binary,
      "--out",
      join(dir, "out"),
    ]);
    deb = r.stdout.trim();
    tree = join(dir, "rootfs");
    await runOk("cp", ["-a", debianRootfs(), tree]);
    // Not /tmp: systemd-nspawn mounts a tmpfs there.
    copyFileSync(deb, join(tree, "var/tmp", basename(deb)));
    lan = createLan(fx);
  });
  after(() => fx.close());

  const inTree = (path: string): string => join(tree, path);
  const chroot = (cmd: string): Promise<Awaited<ReturnType<typeof run>>> =>
    run("chroot", [tree, "sh", "-c", cmd], { env: CLEAN_ENV });
  const chrootOk = async (cmd: string): Promise<string> => {
    const r = await chroot(cmd);
    assert.equal(r.code, 0, `in the tree: ${cmd}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  const debInTree = (): string => `/var/tmp/${basename(deb)}`;

  it("holds the executable, the unit, serve.yaml as a conffile, and Depends covers the executable", async (t) => {
    if (!fx.ready(t)) return;
    const arch = process.arch === "arm64" ? "arm64" : "amd64";
    assert.equal(basename(deb), `inetboot_${debianVersion()}_${arch}.deb`);
    const field = async (name: string): Promise<string> =>
      (await runOk("dpkg-deb", ["--field", deb, name])).stdout.trim();
    assert.equal(await field("Package"), "inetboot");
    assert.equal(await field("Version"), debianVersion());
    assert.equal(await field("Architecture"), arch);
    assert.match(await field("Recommends"), /\bipxe\b/);
    const depends = await field("Depends");
    for (const dep of ["libc6", "libstdc++6", "libgcc-s1", "passwd"]) {
      assert.ok(depends.includes(dep), `Depends lacks ${dep}: ${depends}`);
    }
    const conffiles = await runOk("dpkg-deb", ["--info", deb, "conffiles"]);
    assert.equal(conffiles.stdout.trim(), CONFIG);

    // The library versions the executable needs are what Depends promises (a newer Node may
    // need more: raise Depends in packaging/deb/control.in).
    const needs = await neededVersions(binary);
    const promised: [string, string, string][] = [
      ["GLIBC", "2.28", "libc6 (>= 2.28)"],
      ["GLIBCXX", "3.4.23", "libstdc++6 (>= 7)"],
      ["CXXABI", "1.3.11", "libstdc++6 (>= 7)"],
      ["GCC", "3.4", "libgcc-s1 (>= 3.4)"],
    ];
    for (const [prefix, most, dep] of promised) {
      const need = needs.get(prefix);
      assert.ok(depends.includes(dep), `Depends lacks ${dep}: ${depends}`);
      if (need) assert.ok(!versionLess(most, need), `the executable needs ${prefix}_${need}`);
    }

    const listing = (await runOk("dpkg-deb", ["--contents", deb])).stdout;
    const entries = new Map<string, { mode: string; owner: string; size: number }>();
    for (const line of listing.trim().split("\n")) {
      const [mode, owner, size, , , path] = line.split(/\s+/);
      entries.set(path.replace(/^\.\//, "/").replace(/\/$/, ""), {
        mode,
        owner,
        size: Number(size),
      });
    }
    for (const [path, e] of entries) assert.equal(e.owner, "root/root", `${path} is ${e.owner}`);
    assert.deepEqual(entries.get("/usr/bin/inetboot"), {
      mode: "-rwxr-xr-x",
      owner: "root/root",
      size: statSync(binary).size,
    });
    assert.equal(entries.get(UNIT)?.mode, "-rw-r--r--");
    assert.equal(entries.get(CONFIG)?.mode, "-rw-r--r--");
    assert.equal(entries.get("/usr/share/doc/inetboot/copyright")?.mode, "-rw-r--r--");
    const writable = [...entries].filter(([, e]) => /^.{5}w|^.{8}w/.test(e.mode));
    assert.deepEqual(writable, [], "nothing is group- or world-writable");
  });

  it("installs with apt in a chroot; ExecStart as the unit runs it serves the LAN; remove and purge", async (t) => {
    if (!fx.ready(t)) return;
    await chrootOk(`${APT_ENV} apt-get install -y -q --no-install-recommends ${debInTree()} 2>&1`);
    assert.equal(readFileSync(inTree("usr/bin/inetboot")).length, statSync(binary).size);
    const passwd = (await chrootOk("getent passwd inetboot")).trim().split(":");
    uid = passwd[2];
    assert.ok(Number(uid) < 1000, `inetboot is a system user (uid ${uid})`);
    assert.equal(passwd[5], "/var/lib/inetboot");
    assert.equal(passwd[6], "/usr/sbin/nologin");
    for (const dir of ["var/lib/inetboot", "var/cache/inetboot"]) {
      const s = statSync(inTree(dir));
      assert.equal(String(s.uid), uid, `${dir} belongs to inetboot`);
      assert.equal(s.mode & 0o777, 0o750, `${dir} is 0750`);
    }
    assert.equal((await chrootOk("systemctl is-enabled inetboot.service")).trim(), "enabled");

    // The shipped configuration, exactly as ExecStart: HTTP on 8080 only.
    let served = serveInChroot(lan, tree);
    try {
      const script = await waitUntil("HTTP :8080", () => bootScript(lan, 8080));
      assert.match(script, /^#!ipxe/);
      assert.deepEqual([...(await listening(lan))], ["tcp/8080"], served.output());
    } finally {
      assert.equal(await stop(served), 0, served.output());
    }

    // The unit's user and capabilities are enough for DHCP and TFTP tied to the LAN's bridge.
    writeFileSync(inTree("etc/inetboot/lan.yaml"), lanConfig());
    served = serveInChroot(lan, tree, "/etc/inetboot/lan.yaml");
    try {
      await waitUntil("HTTP :80", () => bootScript(lan, 80));
      const ports = await listening(lan);
      for (const p of ["udp/67", "udp/69", "udp/4011", "tcp/80"]) {
        assert.ok(ports.has(p), `${p} is bound: ${[...ports].join(" ")}\n${served.output()}`);
      }
      const facts = processFacts(readFileSync(`/proc/${served.child.pid}/status`, "utf8"));
      assert.equal(facts.uid, uid);
      assert.equal(facts.eff, CAP_MASK);
      assert.equal(facts.amb, CAP_MASK);
      assert.equal(facts.nnp, "1");
      served.child.kill("SIGHUP");
      await waitUntil("the reload", () =>
        Promise.resolve(/reloaded/.test(served.output()) ? true : null),
      );
    } finally {
      assert.equal(await stop(served), 0, served.output());
    }
    assert.deepEqual([...(await listening(lan))], [], "nothing listens after the stop");
    rmSync(inTree("etc/inetboot/lan.yaml"));

    await chrootOk(`${APT_ENV} apt-get remove -y -q inetboot 2>&1`);
    assert.ok(!existsSync(inTree("usr/bin/inetboot")));
    assert.ok(existsSync(inTree(CONFIG)), "remove keeps the conffile");
    await chrootOk(`${APT_ENV} apt-get purge -y -q inetboot 2>&1`);
    assert.ok(!existsSync(inTree("etc/inetboot")), "purge removes /etc/inetboot");
    assert.ok(!existsSync(inTree("var/cache/inetboot")), "purge removes the cache");
    assert.ok(existsSync(inTree("var/lib/inetboot")), "purge keeps the state");
    assert.ok(!existsSync(inTree("etc/systemd/system/inetboot.service")), "no mask left");
    assert.ok(!existsSync(inTree("etc/systemd/system/multi-user.target.wants/inetboot.service")));
    assert.equal((await chroot("dpkg -s inetboot")).code, 1);
  });

  it("runs under systemd (systemd-nspawn): apt starts it; verify, init --systemd, restart, reload, upgrade, stop, remove, purge", async (t) => {
    if (!fx.ready(t) || !requireTool(t, "systemd-nspawn", "systemd-container")) return;
    assert.ok(uid, "the chroot test ran first");
    // In the LAN's namespace without a new mount namespace: the container's sysfs then shows
    // the LAN's interfaces, and the host's cgroup mounts stay visible to nspawn.
    const nspawn = spawn(
      "nsenter",
      [
        `--net=/run/netns/${lan.server}`,
        ...["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--console=read-only"],
        ...["-D", tree, "--boot"],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let bootLog = "";
    nspawn.stdout.on("data", (d: Buffer) => (bootLog += d.toString()));
    nspawn.stderr.on("data", (d: Buffer) => (bootLog += d.toString()));
    const gone = new Promise<void>((resolve) => nspawn.on("close", () => resolve()));
    let leader = "";
    t.after(async () => {
      if (nspawn.exitCode !== null || nspawn.signalCode !== null) return;
      if (leader) await run("kill", ["-s", "KILL", leader]);
      nspawn.kill("SIGKILL");
      await gone;
    });
    const exited = (): true | null => (nspawn.exitCode !== null ? true : null);
    leader = await waitUntil("the container's init", async () => {
      if (exited()) return "";
      const r = await run("pgrep", ["-P", String(nspawn.pid)]);
      const pid = r.stdout.trim();
      // Not before nspawn's child has become the container's systemd.
      const comm = pid ? await run("cat", [`/proc/${pid}/comm`]) : null;
      return comm?.stdout.trim() === "systemd" ? pid : null;
    });
    if (!leader) {
      requireOrSkip(t, `systemd-nspawn cannot boot a container here:\n${bootLog.slice(-2000)}`);
      return;
    }
    const inside = (cmd: string): ReturnType<typeof run> =>
      run("nsenter", ["-t", leader, "-a", "sh", "-c", cmd], { env: CLEAN_ENV });
    const insideOk = async (cmd: string): Promise<string> => {
      const r = await inside(cmd);
      assert.equal(r.code, 0, `in the container: ${cmd}\n${r.stdout}\n${r.stderr}`);
      return r.stdout;
    };
    const state = await waitUntil(
      "systemd to finish booting",
      async () => {
        // "offline" until systemd listens on its private socket.
        const r = await inside("systemctl is-system-running --wait");
        return ["", "offline"].includes(r.stdout.trim()) ? null : r.stdout.trim();
      },
      60_000,
    );
    assert.ok(["running", "degraded"].includes(state), `system state ${state}\n${bootLog}`);
    const mainPid = async (): Promise<string> =>
      (await insideOk("systemctl show -P MainPID inetboot.service")).trim();
    const journal = (): Promise<string> => insideOk("journalctl -u inetboot.service --no-pager");

    await insideOk(`${APT_ENV} apt-get install -y -q --no-install-recommends ${debInTree()} 2>&1`);
    assert.equal((await insideOk("systemctl is-active inetboot.service")).trim(), "active");
    await waitUntil("HTTP :8080", () => bootScript(lan, 8080));
    await insideOk(`systemd-analyze verify ${UNIT}`);

    // What the unit gives the server: its user, its two capabilities, no_new_privs.
    const facts = processFacts(await insideOk(`cat /proc/${await mainPid()}/status`));
    assert.equal(facts.uid, uid);
    assert.equal(facts.eff, CAP_MASK);
    assert.equal(facts.amb, CAP_MASK);
    assert.equal(facts.nnp, "1");

    // inetboot init --systemd replaces the unedited packaged serve.yaml (no --force needed) and
    // restarts the service on the LAN it wrote: full DHCP and TFTP bound, HTTP still on 8080.
    const before = await mainPid();
    const init = await insideOk(
      "inetboot init --systemd --interface br0 --dhcp full --no-installer 2>&1",
    );
    assert.match(init, /Replaced \/etc\/inetboot\/serve\.yaml: full DHCP, addresses /, init);
    assert.match(readFileSync(inTree(CONFIG), "utf8"), /^dhcp: \{ mode: full, range: /m);
    assert.match(readFileSync(inTree(CONFIG), "utf8"), /^state: \/var\/lib\/inetboot$/m);
    assert.ok(existsSync(inTree(`${CONFIG}.bak`)), "the packaged file is kept as .bak");
    assert.notEqual(await mainPid(), before, "init restarted the service");
    await waitUntil("HTTP :8080 after init", () => bootScript(lan, 8080));
    const initPorts = await listening(lan);
    for (const p of ["udp/67", "udp/69", "tcp/8080"]) {
      assert.ok(initPorts.has(p), `${p} is bound after init: ${[...initPorts].join(" ")}`);
    }
    const again = await insideOk(
      "inetboot init --systemd --interface br0 --dhcp full --no-installer 2>&1",
    );
    assert.match(again, /Unchanged \/etc\/inetboot\/serve\.yaml/);

    // A LAN configuration needs a restart; under the unit's sandbox it binds DHCP and TFTP.
    writeFileSync(inTree(CONFIG), lanConfig());
    await insideOk("systemctl restart inetboot.service");
    await waitUntil("HTTP :80", () => bootScript(lan, 80));
    const ports = await listening(lan);
    for (const p of ["udp/67", "udp/69", "udp/4011", "tcp/80"]) {
      assert.ok(ports.has(p), `${p} is bound: ${[...ports].join(" ")}\n${await journal()}`);
    }
    // systemctl reload: SIGHUP, the edited file swapped in without a restart.
    const pid = await mainPid();
    const edited = lanConfig("entries: { hello: { kernel: /srv/boot/vmlinuz } }");
    writeFileSync(inTree(CONFIG), edited);
    await insideOk("systemctl reload inetboot.service");
    await waitUntil("the reload in the journal", async () =>
      /entries added: hello/.test(await journal()) ? true : null,
    );
    assert.equal(await mainPid(), pid, "reload keeps the process");

    // An upgrade (the same package again) keeps the edited serve.yaml and restarts the server.
    await insideOk(`${APT_ENV} apt-get install -y -q --reinstall ${debInTree()} 2>&1`);
    assert.equal(readFileSync(inTree(CONFIG), "utf8"), edited);
    assert.notEqual(await mainPid(), pid, "the upgrade restarted it");
    assert.equal((await insideOk("systemctl is-active inetboot.service")).trim(), "active");

    await insideOk("systemctl stop inetboot.service");
    assert.equal((await inside("systemctl is-active inetboot.service")).stdout.trim(), "inactive");
    assert.deepEqual([...(await listening(lan))], [], "nothing listens after the stop");
    await insideOk("systemctl start inetboot.service");
    await waitUntil("HTTP :80", () => bootScript(lan, 80));

    // Remove stops it; purge leaves no unit state behind.
    await insideOk(`${APT_ENV} apt-get remove -y -q inetboot 2>&1`);
    assert.equal((await inside("systemctl is-active inetboot.service")).stdout.trim(), "inactive");
    assert.deepEqual([...(await listening(lan))], [], "nothing listens after the removal");
    await insideOk(`${APT_ENV} apt-get purge -y -q inetboot 2>&1`);
    assert.match(
      (await inside("systemctl list-unit-files inetboot.service")).stdout,
      /0 unit files/,
    );
    assert.ok(!existsSync(inTree("etc/inetboot")));

    // Power off (SIGRTMIN+4 to systemd) within 30 s.
    await runOk("kill", ["-s", "RTMIN+4", leader]);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the container did not power off:\n${bootLog.slice(-2000)}`)),
        30_000,
      );
    });
    try {
      await Promise.race([gone, late]);
    } finally {
      clearTimeout(timer);
    }
  });
});
