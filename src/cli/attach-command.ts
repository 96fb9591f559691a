// `inetboot attach` (serve one image over NBD until interrupted) and `inetboot cache status`.
import type { Command } from "commander";
import { cacheCoverage, openChunkCache, readCacheSettings } from "../block/chunk-cache.ts";
import { openDeviceStack } from "../block/open-stack.ts";
import { profileChunks, readProfile } from "../block/profile.ts";
import { createLogger } from "../lib/log.ts";
import { NbdServer, nbdUri, parseListen } from "../nbd/server.ts";
import { openImage } from "../store/source.ts";
import type { TrustPolicy } from "../store/trust.ts";
import { formatBytes } from "../lib/format.ts";
import { collect, parseBytes } from "./options.ts";

interface AttachFlags {
  store: string[];
  cache?: string;
  cacheQuota?: string;
  cow?: string;
  trace?: string;
  profile?: string;
  offline?: boolean;
  listen: string;
  export: string;
  trust: string[];
  insecure?: boolean;
  state?: string;
}

/** Makes the trust policy from a command's --trust/--insecure/--state flags. */
export type TrustFactory = (
  flags: { trust: string[]; insecure?: boolean; state?: string },
  record: boolean,
) => TrustPolicy;

export function registerAttachCommands(program: Command, trust: TrustFactory): void {
  program
    .command("attach")
    .description(
      "serve an image over NBD (lazy, verified, cached) until interrupted; prints its NBD URI",
    )
    .argument(
      "<source>",
      "NAME, NAME@REVISION, NAME@sha256:DIGEST, a release or .caibx, a raw image file, or an http:// URL of a raw image or ISO",
    )
    .option("--store <dir|url>", "store to read from; repeat for mirrors of one store", collect, [])
    .option("--cache <dir>", "keep verified chunks here (also works as a local store when offline)")
    .option(
      "--cache-quota <size>",
      "cache size limit, e.g. 10G (default 10G, or what the cache was given before)",
    )
    .option(
      "--cow <file>",
      "copy-on-write overlay: makes the disk writable; delete the file to reset it",
    )
    .option("--trace <file>", "record the first access to each region into a boot profile")
    .option("--profile <file>", "prefetch the regions of this boot profile in the background")
    .option("--offline", "use only the cache, never the network")
    .option("--listen <address>", "unix:PATH or tcp:HOST:PORT", "tcp:127.0.0.1:10809")
    .option("--export <name>", "export name", "")
    .option(
      "--trust <pubkey>",
      "trust releases signed by this minisign public key (repeatable)",
      collect,
      [],
    )
    .option("--insecure", "accept unsigned releases and bare .caibx indexes (nothing is checked)")
    .option("--state <file>", "anti-rollback state file")
    .action(async (source: string, opts: AttachFlags) => {
      const log = createLogger("attach");
      const stack = await openDeviceStack(source, {
        stores: opts.store,
        cache: opts.cache,
        cacheQuotaBytes: opts.cacheQuota ? parseBytes(opts.cacheQuota) : undefined,
        cow: opts.cow,
        trace: opts.trace,
        profile: opts.profile,
        offline: opts.offline,
        policy: trust(opts, true),
        logger: log,
      });
      const server = new NbdServer({
        exports: [{ name: opts.export, description: stack.label, device: stack.device }],
        logger: log,
      });
      const address = await server.listen(parseListen(opts.listen));
      console.log(nbdUri(address, opts.export));
      console.error(
        `Serving ${stack.label} (${formatBytes(stack.device.size)}, ${stack.device.readOnly ? "read-only" : "writable"}) — Ctrl-C to stop.`,
      );
      const statsTimer = stack.cache
        ? setInterval(() => stack.cache?.saveSettings(), 10_000)
        : null;
      statsTimer?.unref();
      await new Promise<void>((resolve) => {
        const stop = (): void => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      if (statsTimer) clearInterval(statsTimer);
      await server.close();
      await stack.close();
      if (stack.cache) {
        stack.cache.saveSettings();
        const s = stack.cache.stats;
        console.error(
          `Stopped. Cache: ${s.hits} hits, ${s.misses} misses, ${formatBytes(s.bytesFetched)} fetched.`,
        );
      }
    });

  const cache = program.command("cache").description("inspect a chunk cache");
  cache
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
    )
    .option("--trust <pubkey>", "trust releases signed by this key (repeatable)", collect, [])
    .option("--insecure", "accept unsigned releases and bare .caibx indexes (nothing is checked)")
    .option("--json", "print as JSON")
    .action(
      async (opts: {
        cache: string;
        canBootOffline?: string;
        profile?: string;
        trust: string[];
        insecure?: boolean;
        json?: boolean;
      }) => {
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
          const policy = {
            ...trust(opts, false),
            insecure: opts.insecure || opts.trust.length === 0,
          };
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
            `Cache ${c.dir}: ${formatBytes(c.totalBytes)} in ${c.chunkCount} chunks${c.blockCaches.count ? ` and ${c.blockCaches.count} ISO/raw block caches (${formatBytes(c.blockCaches.bytes)})` : ""}, quota ${formatBytes(c.quotaBytes)}`,
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
      },
    );
}
