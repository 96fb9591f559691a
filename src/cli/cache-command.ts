// `inetboot cache status`: a chunk cache's size, quota and hit rate, and whether a release can
// boot from it with no network.
import type { Command } from "commander";
import { cacheCoverage, openChunkCache, readCacheSettings } from "../block/chunk-cache.ts";
import { profileChunks, readProfile } from "../store/profile.ts";
import { openImage } from "../store/source.ts";
import { formatBytes } from "../lib/format.ts";
import { addTrustOptions, CACHE_TRUST_HELP, trustPolicy } from "./trust-options.ts";
import type { TrustFlags } from "./trust-options.ts";

interface CacheStatusFlags extends TrustFlags {
  cache: string;
  canBootOffline?: string;
  profile?: string;
  json?: boolean;
}

export function registerCacheCommands(program: Command): void {
  const cache = program.command("cache").description("inspect a chunk cache");
  const status = cache
    .command("status")
    .description("size, quota, hit rate, and whether a release can boot with no network")
    .requiredOption("--cache <dir>", "the cache folder")
    .option(
      "--can-boot-offline <name>",
      "check that this image's latest cached release can be read entirely from the cache",
    )
    .option(
      "--profile <file>",
      "with --can-boot-offline: only the regions of this boot profile must be cached",
    );
  addTrustOptions(status, CACHE_TRUST_HELP)
    .option("--json", "print as JSON")
    .action(async (opts: CacheStatusFlags) => {
      const c = openChunkCache(opts.cache);
      const t = c.totals;
      const lookups = t.hits + t.misses;
      const report: Record<string, unknown> = {
        dir: c.dir,
        bytes: c.totalBytes,
        chunks: c.chunkCount,
        blockCaches: c.blockCaches,
        quotaBytes: c.quotaBytes,
        quotaConfigured: readCacheSettings(c.dir).quotaBytes !== undefined,
        hits: t.hits,
        misses: t.misses,
        hitRate: lookups > 0 ? t.hits / lookups : null,
        evictions: t.evictions,
      };
      let ok = true;
      if (opts.canBootOffline) {
        const policy = trustPolicy(opts, { recordState: false, insecureWithoutTrust: true });
        const image = await openImage(opts.canBootOffline, {
          store: opts.cache,
          policy,
          allowUnsigned: opts.insecure === true,
        });
        try {
          const wanted = opts.profile
            ? profileChunks(image.index, readProfile(opts.profile))
            : image.index.chunks;
          const cover = cacheCoverage(c, wanted);
          ok = cover.missing === 0;
          report.offline = {
            release: image.label,
            chunksNeeded: cover.needed,
            chunksMissing: cover.missing,
            bytesMissing: cover.bytesMissing,
            canBootOffline: ok,
          };
        } finally {
          await image.close();
        }
      }
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else {
        console.log(
          `Cache ${c.dir}: ${formatBytes(c.totalBytes)} in ${c.chunkCount} chunks${c.blockCaches.count ? ` and ${c.blockCaches.count} block caches (ISOs, raw and unpacked images) (${formatBytes(c.blockCaches.bytes)})` : ""}, quota ${formatBytes(c.quotaBytes)}`,
        );
        console.log(
          `  ${t.hits} hits, ${t.misses} misses${lookups ? ` (hit rate ${((100 * t.hits) / lookups).toFixed(1)}%)` : ""}, ${t.evictions} evictions`,
        );
        const off = report.offline as
          | { release: string; chunksNeeded: number; chunksMissing: number; bytesMissing: number }
          | undefined;
        if (off) {
          console.log(
            ok
              ? `  ${off.release} can boot offline: all ${off.chunksNeeded} chunks it needs are cached`
              : `  ${off.release} can NOT boot offline: ${off.chunksMissing} of ${off.chunksNeeded} chunks (${formatBytes(off.bytesMissing)}) are missing; attach it once online to fetch them`,
          );
        }
      }
      if (!ok) process.exitCode = 1;
    });
}
