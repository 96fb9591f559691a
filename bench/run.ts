// `npm run bench`: every benchmark against its real peer, in one run; prints the tables and
// writes them, with the machine and the date, to bench/RESULTS.md.
import { execFileSync } from "node:child_process";
import { cpus, totalmem } from "node:os";
import { writeFileSync } from "node:fs";
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
  ];
  return lines.join("\n");
}

const sections = [
  packSection("debootstrap minbase in a 2 GiB ext4 image", buildImages()),
  packSection("the same trees as plain tar files (dense data, no zero runs)", buildTars()),
];
const report = [
  `# Benchmark results`,
  "",
  `${new Date().toISOString().slice(0, 10)} on ${machine()}`,
  "",
  ...sections,
  "",
].join("\n");
console.log(report);
writeFileSync(new URL("RESULTS.md", import.meta.url), report);
