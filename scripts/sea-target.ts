// For scripts/build-sea.ts: what a single executable for another architecture is made from.
// The Node binary of the running Node's version for that architecture (npm's node-linux-ARCH
// package, fetched once into node_modules/.cache/inetboot-sea/) and sockopt's N-API binding,
// cross-compiled with Debian's g++-TRIPLE-linux-gnu against that package's headers.
import { execFileSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
} from "node:fs";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const CACHE = join(ROOT, "node_modules/.cache/inetboot-sea");

/**
 * The architectures an executable can be built for: Node's name → GNU triplet, Debian's cross
 * compiler package, ELF e_machine.
 */
export const TARGETS = {
  x64: { gnu: "x86_64-linux-gnu", gxxPackage: "g++-x86-64-linux-gnu", elfMachine: 62 },
  arm64: { gnu: "aarch64-linux-gnu", gxxPackage: "g++-aarch64-linux-gnu", elfMachine: 183 },
} as const;
export type Arch = keyof typeof TARGETS;

export function isArch(arch: string): arch is Arch {
  return Object.hasOwn(TARGETS, arch);
}

/** The architecture in an ELF file's header (e_machine), by Node's name: "arm64", "x64", or "?". */
export function elfArch(path: string): string {
  const header = Buffer.alloc(20);
  const fd = openSync(path, "r");
  try {
    readSync(fd, header, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  if (header.readUInt32BE(0) !== 0x7f454c46) return "?";
  const machine = header.readUInt16LE(18);
  return Object.entries(TARGETS).find(([, t]) => t.elfMachine === machine)?.[0] ?? "?";
}

/**
 * The unpacked node-linux-ARCH@VERSION package (its bin/node and N-API headers), fetched with
 * `npm pack` (the user's registry and proxy settings apply) the first time it is asked for.
 */
export function nodePackage(arch: Arch, version: string): string {
  const name = `node-linux-${arch}@${version.replace(/^v/, "")}`;
  const dir = join(CACHE, name);
  if (existsSync(join(dir, "bin/node"))) return dir;
  const work = `${dir}.${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    console.log(`fetching ${name} (the Node binary for linux-${arch}) …`);
    execFileSync("npm", ["pack", name, "--pack-destination", work, "--silent"], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    const [tgz] = readdirSync(work).filter((f) => f.endsWith(".tgz"));
    if (!tgz) throw new Error(`npm pack ${name} wrote no tarball`);
    // The binary and the N-API headers (node_api.h, js_native_api.h and their *_types.h).
    const members = ["package/bin/node", "package/include/node/*_api*.h"];
    const tar = ["-xzf", join(work, tgz), "-C", work, "--strip-components=1", "--wildcards"];
    execFileSync("tar", [...tar, ...members], { stdio: "inherit" });
    rmSync(join(work, tgz));
    if (!existsSync(join(work, "bin/node"))) throw new Error(`${name} has no bin/node`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(work, dir);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return dir;
}

function have(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v "$0"`, cmd], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * sockopt's binding for `arch`, compiled into `out` as node-gyp would (lib/sockopt.cc with
 * node-addon-api, NAPI_DISABLE_CPP_EXCEPTIONS); an N-API addon links no libnode: its napi_*
 * symbols resolve when Node loads it. Undefined (with a warning) when there is no cross
 * compiler.
 */
export function crossSockopt(arch: Arch, nodeDir: string, out: string): string | undefined {
  const gxx = `${TARGETS[arch].gnu}-g++`;
  if (!have(gxx)) {
    console.warn(
      `WARNING: no ${gxx} (Debian package ${TARGETS[arch].gxxPackage}): the linux-${arch} ` +
        "executable is built without sockopt's binding, so its DHCP and TFTP servers cannot " +
        "bind to one interface (they warn at start)",
    );
    return undefined;
  }
  const sockopt = join(ROOT, "node_modules/sockopt");
  execFileSync(
    gxx,
    [
      ...["-shared", "-fPIC", "-pthread", "-O2", "-std=gnu++17", "-fno-rtti", "-fno-exceptions"],
      ...["-DNAPI_DISABLE_CPP_EXCEPTIONS", "-DBUILDING_NODE_EXTENSION"],
      ...["-DNODE_GYP_MODULE_NAME=sockopt", "-D_FILE_OFFSET_BITS=64"],
      ...["-I", join(nodeDir, "include/node"), "-I", join(ROOT, "node_modules/node-addon-api")],
      join(sockopt, "lib/sockopt.cc"),
      ...["-o", out],
    ],
    { stdio: "inherit" },
  );
  return out;
}
