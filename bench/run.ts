// `npm run bench`: every benchmark against its real peer, in one run; prints the tables and
// writes them, with the machine and the date, to bench/RESULTS.md.
import { execFileSync } from "node:child_process";
import { cpus, totalmem } from "node:os";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { benchBootServer } from "./boot-server.ts";
import { benchInternetBoot } from "./internet-boot.ts";
import { benchLazyIso } from "./lazy-iso.ts";
import { benchLiveIso } from "./live-iso.ts";
import { benchNbd } from "./nbd.ts";
import { benchSoak } from "./soak.ts";
import { benchPack, buildImages, buildTars } from "./store-pack.ts";

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

function machine(): string {
  const casync = execFileSync("casync", ["--version"], { encoding: "utf8" }).trim().split("\n")[0];
  return `${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, ${(totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, Node ${process.version}, ${casync}`;
}

function packSection(title: string, images: { v1: string; v2: string }): string {
  const { rows, imageBytes, chunkSize } = benchPack(images);
  const [ours, peer] = [
    rows.find((r) => r.tool === "inetboot")!,
    rows.find((r) => r.tool === "casync")!,
  ];
  const lines = [
    `## pack: ${title} (${mb(imageBytes)}), v1 then v2 (+ packages), chunks ${chunkSize}`,
    "",
    "| tool | v1 MB/s | v2 MB/s | store after v1 | store after v1+v2 | peak RSS |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map(
      (r) =>
        `| ${r.tool} | ${r.v1.mbps.toFixed(0)} | ${r.v2.mbps.toFixed(0)} | ${mb(r.storeAfterV1)} | ${mb(r.storeAfterV2)} | ${mb(Math.max(r.v1.peakRssBytes, r.v2.peakRssBytes))} |`,
    ),
    "",
    `- throughput ratio inetboot/casync: v1 ${(ours.v1.mbps / peer.v1.mbps).toFixed(2)}x, v2 ${(ours.v2.mbps / peer.v2.mbps).toFixed(2)}x (goal: at least 1.5x)`,
    `- store size inetboot/casync: after v1 ${((100 * ours.storeAfterV1) / peer.storeAfterV1).toFixed(1)}%, after v1+v2 ${((100 * ours.storeAfterV2) / peer.storeAfterV2).toFixed(1)}% (goal: within 2%)`,
    "- times are the best of three rounds, the tools in turns, each into a new store on disk; peak RSS is the largest of any round (goal: at most 100 MB)",
  ];
  return lines.join("\n");
}

// `npm run bench -- nbd` runs only the named benchmarks (pack, nbd, serve, wan, iso, soak); no names runs them all.
// Each writes bench/results/NAME.md with its machine and date; RESULTS.md joins them all.
const benches: Record<string, () => Promise<string> | string> = {
  pack: () =>
    [
      packSection("debootstrap minbase in a 2 GiB ext4 image", buildImages()),
      packSection("the same trees as plain tar files (dense data, no zero runs)", buildTars()),
    ].join("\n\n"),
  nbd: () => benchNbd(),
  serve: () => benchBootServer(),
  wan: () => benchInternetBoot(),
  iso: async () => [await benchLiveIso(), await benchLazyIso()].join("\n\n"),
  soak: () => benchSoak(),
};
const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(benches);
const resultsDir = new URL("results/", import.meta.url);
mkdirSync(resultsDir, { recursive: true });
const stamp = `${new Date().toISOString().slice(0, 10)} on ${machine()}`;
for (const name of names) {
  const bench = benches[name];
  if (!bench)
    throw new Error(`No benchmark named ${name}; known: ${Object.keys(benches).join(", ")}`);
  const section = `${await bench()}\n\n_${stamp}_\n`;
  console.log(section);
  writeFileSync(new URL(`${name}.md`, resultsDir), section);
}
const all = Object.keys(benches)
  .filter((n) => existsSync(new URL(`${n}.md`, resultsDir)))
  .map((n) => readFileSync(new URL(`${n}.md`, resultsDir), "utf8"));
writeFileSync(
  new URL("RESULTS.md", import.meta.url),
  ["# Benchmark results", "", ...all].join("\n"),
);
