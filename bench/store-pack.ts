// Benchmark: pack a real filesystem image, and a second version of it, with inetboot and with
// `casync make --digest=sha256` at the same chunk sizes, in the same run. Prints MB/s, the
// ratio, store sizes after v1 and v1+v2, and peak RSS. Not a timed test.
//
// The images: `debootstrap --variant=minbase bookworm` into a 2 GiB ext4 image (mkfs.ext4 -d),
// and the same tree with a few more packages installed. Built once into bench/out/.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

export const OUT = new URL("out/", import.meta.url).pathname;
const REPO = new URL("../", import.meta.url).pathname;
const IMAGE_SIZE = "2G";
const MIRROR = process.env.DEBIAN_MIRROR ?? "http://deb.debian.org/debian";
const EXTRA_PACKAGES = [
  "less",
  "vim-tiny",
  "curl",
  "ca-certificates",
  "iproute2",
  "openssh-client",
  "python3-minimal",
];

function sh(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });
}

function ensureTools(): void {
  const missing = ["debootstrap", "casync", "mkfs.ext4"].filter(
    (c) => spawnSync("sh", ["-c", `command -v ${c} || test -x /usr/sbin/${c}`]).status !== 0,
  );
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0)
    throw new Error(
      `The benchmark needs ${missing.join(", ")} (Debian: debootstrap casync e2fsprogs) and root`,
    );
  sh("sh", [
    "-c",
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap casync e2fsprogs",
  ]);
}

/** Builds (once) the two versions of the root filesystem image; returns their paths. */
export function buildImages(): { v1: string; v2: string } {
  ensureTools();
  mkdirSync(OUT, { recursive: true });
  const rootfs1 = join(OUT, "rootfs1");
  const rootfs2 = join(OUT, "rootfs2");
  const v1 = join(OUT, "debian-v1.img");
  const v2 = join(OUT, "debian-v2.img");
  if (!existsSync(join(rootfs1, "etc/os-release"))) {
    console.error(`building ${rootfs1} with debootstrap (a minute or two)...`);
    rmSync(rootfs1, { recursive: true, force: true });
    sh("debootstrap", ["--variant=minbase", "bookworm", rootfs1, MIRROR]);
  }
  if (!existsSync(join(rootfs2, "usr/bin/curl"))) {
    console.error(`building ${rootfs2}: the same tree plus ${EXTRA_PACKAGES.join(" ")}...`);
    rmSync(rootfs2, { recursive: true, force: true });
    sh("cp", ["-a", rootfs1, rootfs2]);
    sh("chroot", [
      rootfs2,
      "/bin/sh",
      "-c",
      `export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends ${EXTRA_PACKAGES.join(" ")} && apt-get clean`,
    ]);
  }
  for (const [img, root] of [
    [v1, rootfs1],
    [v2, rootfs2],
  ]) {
    if (!existsSync(img)) {
      sh("mkfs.ext4", ["-q", "-F", "-d", root, "-E", "root_owner=0:0", img, IMAGE_SIZE]);
    }
  }
  return { v1, v2 };
}

/** The same two trees as uncompressed tar files: dense data, no zero runs to skip. */
export function buildTars(): { v1: string; v2: string } {
  buildImages();
  const out = { v1: join(OUT, "rootfs1.tar"), v2: join(OUT, "rootfs2.tar") };
  for (const [tar, root] of [
    [out.v1, join(OUT, "rootfs1")],
    [out.v2, join(OUT, "rootfs2")],
  ]) {
    if (!existsSync(tar)) sh("tar", ["--sort=name", "-cf", tar, "-C", root, "."]);
  }
  return out;
}

interface Measured {
  seconds: number;
  peakRssBytes: number;
}

/** Runs a command under GNU time; returns wall seconds and peak RSS. */
function measure(cmd: string, args: string[]): Measured {
  const r = spawnSync("/usr/bin/time", ["-f", "%e %M", cmd, ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stderr}`);
  const [seconds, kb] = r.stderr.trim().split("\n").pop()!.split(" ").map(Number);
  return { seconds, peakRssBytes: kb * 1024 };
}

/** Total bytes of the files under `dir` (what a web server would host). */
function treeBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    total += entry.isDirectory() ? treeBytes(p) : statSync(p).size;
  }
  return total;
}

export interface PackRow {
  tool: string;
  v1: Measured & { mbps: number };
  v2: Measured & { mbps: number };
  storeAfterV1: number;
  storeAfterV2: number;
}

export function benchPack(images: { v1: string; v2: string }): {
  rows: PackRow[];
  imageBytes: number;
  chunkSize: string;
} {
  const { v1, v2 } = images;
  const imageBytes = statSync(v1).size;
  // Both images in the page cache, so neither tool pays for the first read.
  for (const img of [v1, v2]) sh("sh", ["-c", `cat ${img} > /dev/null`]);
  const chunkSize = "16K:64K:256K";
  const rows: PackRow[] = [];
  const cli = join(REPO, "bin", "inetboot.js");
  const tools: [string, (img: string, store: string, tag: string) => string[]][] = [
    [
      "inetboot",
      (img, store) => [
        process.execPath,
        cli,
        "pack",
        img,
        "--store",
        store,
        "--name",
        "debian",
        "--chunk-size",
        chunkSize,
      ],
    ],
    [
      "casync",
      (img, store, tag) => [
        "casync",
        "make",
        "--digest=sha256",
        "--chunk-size=16384:65536:262144",
        `--store=${join(store, "chunks")}`,
        join(store, `${tag}.caibx`),
        img,
      ],
    ],
  ];
  // Best of three rounds, the tools in turns (single runs moved by a third with the disk).
  // Peak RSS is the largest of any round.
  const best = (a: Measured | undefined, b: Measured): Measured =>
    a
      ? {
          seconds: Math.min(a.seconds, b.seconds),
          peakRssBytes: Math.max(a.peakRssBytes, b.peakRssBytes),
        }
      : b;
  const results = new Map<string, { m1?: Measured; m2?: Measured; s1: number; s2: number }>();
  for (let round = 0; round < 3; round++) {
    for (const [tool, argv] of tools) {
      const store = join(OUT, `store-${tool}`);
      rmSync(store, { recursive: true, force: true });
      mkdirSync(store, { recursive: true });
      sh("sync", []);
      const r = results.get(tool) ?? { s1: 0, s2: 0 };
      const [c1, ...a1] = argv(v1, store, "v1");
      r.m1 = best(r.m1, measure(c1, a1));
      r.s1 = treeBytes(join(store, "chunks"));
      const [c2, ...a2] = argv(v2, store, "v2");
      r.m2 = best(r.m2, measure(c2, a2));
      r.s2 = treeBytes(join(store, "chunks"));
      results.set(tool, r);
    }
  }
  for (const [tool, r] of results) {
    rows.push({
      tool,
      v1: { ...r.m1!, mbps: imageBytes / 1e6 / r.m1!.seconds },
      v2: { ...r.m2!, mbps: statSync(v2).size / 1e6 / r.m2!.seconds },
      storeAfterV1: r.s1,
      storeAfterV2: r.s2,
    });
  }
  return { rows, imageBytes, chunkSize };
}
