// `inetboot attach`: one image served over NBD until interrupted.
import type { Command } from "commander";
import { openDeviceStack } from "../block/open-stack.ts";
import { createLogger } from "../lib/log.ts";
import { NbdServer, nbdUri, parseListen } from "../nbd/server.ts";
import { formatBytes } from "../lib/format.ts";
import { collect, parseBytes } from "./options.ts";
import { addTrustOptions, ATTACH_TRUST_HELP, trustPolicy } from "./trust-options.ts";
import type { TrustFlags } from "./trust-options.ts";

interface AttachFlags extends TrustFlags {
  store: string[];
  cache?: string;
  cacheQuota?: string;
  unpacked: boolean;
  cow?: string;
  trace?: string;
  profile?: string;
  offline?: boolean;
  listen: string;
  export: string;
}

export function registerAttachCommand(program: Command): void {
  const attach = program
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
      "--no-unpacked",
      "keep only the compressed chunks in the cache, not also the image's bytes uncompressed (less disk, slower warm reads)",
    )
    .option(
      "--cow <file>",
      "copy-on-write overlay: makes the disk writable; delete the file to reset it",
    )
    .option("--trace <file>", "record the first access to each region into a boot profile")
    .option("--profile <file>", "prefetch the regions of this boot profile in the background")
    .option("--offline", "use only the cache, never the network")
    .option("--listen <address>", "unix:PATH or tcp:HOST:PORT", "tcp:127.0.0.1:10809")
    .option("--export <name>", "export name", "");
  addTrustOptions(attach, ATTACH_TRUST_HELP).action(async (source: string, opts: AttachFlags) => {
    const log = createLogger("attach");
    const stack = await openDeviceStack(source, {
      stores: opts.store,
      cache: opts.cache,
      cacheQuotaBytes: opts.cacheQuota ? parseBytes(opts.cacheQuota) : undefined,
      unpacked: opts.unpacked,
      cow: opts.cow,
      trace: opts.trace,
      profile: opts.profile,
      offline: opts.offline,
      policy: trustPolicy(opts, { recordState: true }),
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
    const statsTimer = stack.cache ? setInterval(() => stack.cache?.saveSettings(), 10_000) : null;
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
}
