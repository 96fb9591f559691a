// /metrics beyond the counters the server keeps itself: families read from the servers' own
// statistics at scrape time (DHCP, TFTP, NBD, chunk cache, mirrors, images, ISOs) and the
// server's health (server-health.ts).
import type { DhcpServer } from "../dhcp/server.ts";
import type { NbdServer } from "../nbd/server.ts";
import type { TftpServer } from "../tftp/server.ts";
import type { ImageExports, ImageExportsOptions } from "./image-exports.ts";
import type { LiveIso } from "../iso/live-iso.ts";
import type { IsoEntries } from "./iso-entries.ts";
import { family } from "./metrics.ts";
import type { Family, Metrics } from "./metrics.ts";
import { healthFamilies } from "./server-health.ts";
import type { LoopDelay } from "./server-health.ts";

/** The image exports' hooks that feed the server's counters. */
export function imageMetrics(
  metrics: Metrics,
): Pick<ImageExportsOptions, "onNewRelease" | "onFetch"> {
  return {
    onNewRelease: (entry) =>
      metrics.inc(
        "inetboot_image_release_changes_total",
        "Image entries moved to a newer release while the server ran",
        { entry },
      ),
    onFetch: (seconds, mirror, ok) =>
      metrics.observe(
        "inetboot_chunk_fetch_seconds",
        "Chunk fetches from mirrors: duration by mirror and result",
        { mirror, result: ok ? "ok" : "error" },
        seconds,
      ),
  };
}

export interface ScrapeSources {
  loop: LoopDelay;
  images(): ImageExports | null;
  isos: IsoEntries;
  dhcp(): DhcpServer | null;
  tftp(): TftpServer | null;
  nbd(): NbdServer | null;
}

/** Families read from the servers' own counters at scrape time. */
export async function scrapeFamilies(s: ScrapeSources): Promise<Family[]> {
  const out: Family[] = [];
  const dhcp = s.dhcp();
  if (dhcp) {
    const d = dhcp.stats;
    out.push(
      family("inetboot_dhcp_packets_received_total", "counter", "DHCP packets received", [
        [{}, d.received],
      ]),
      family(
        "inetboot_dhcp_packets_dropped_total",
        "counter",
        "DHCP packets dropped (malformed or not for us)",
        [[{}, d.dropped]],
      ),
      family("inetboot_dhcp_replies_total", "counter", "DHCP replies sent", [[{}, d.replies]]),
    );
  }
  const tftp = s.tftp();
  if (tftp) {
    const t = tftp.stats;
    out.push(
      family("inetboot_tftp_requests_total", "counter", "TFTP read requests", [[{}, t.requests]]),
      family("inetboot_tftp_transfers_total", "counter", "TFTP transfers finished, by result", [
        [{ result: "completed" }, t.completed],
        [{ result: "failed" }, t.failed],
      ]),
      family("inetboot_tftp_sent_bytes_total", "counter", "TFTP file bytes sent", [[{}, t.bytes]]),
      family("inetboot_tftp_packets_dropped_total", "counter", "Malformed TFTP packets dropped", [
        [{}, t.dropped],
      ]),
      family("inetboot_tftp_active_transfers", "gauge", "TFTP transfers in progress", [
        [{}, t.active],
      ]),
    );
  }
  const nbd = s.nbd();
  if (nbd) {
    const n = nbd.stats;
    out.push(
      family("inetboot_nbd_connections_total", "counter", "NBD connections accepted", [
        [{}, n.connections],
      ]),
      family(
        "inetboot_nbd_requests_total",
        "counter",
        "NBD requests by command",
        Object.entries(n.requests).map(([command, v]) => [{ command }, v]),
      ),
      family("inetboot_nbd_errors_total", "counter", "NBD requests answered with an error", [
        [{}, n.errors],
      ]),
      family("inetboot_nbd_read_bytes_total", "counter", "Bytes read by NBD clients", [
        [{}, n.bytesRead],
      ]),
      family("inetboot_nbd_written_bytes_total", "counter", "Bytes written by NBD clients", [
        [{}, n.bytesWritten],
      ]),
    );
  }
  out.push(
    ...healthFamilies({
      loop: s.loop,
      tftp,
      nbd,
      exports: s.images()?.counts ?? null,
    }),
  );
  const opened = (await s.images()?.opened()) ?? [];
  const cache = opened.find((o) => o.stack.cache)?.stack.cache;
  if (cache) {
    const c = cache.stats;
    out.push(
      family("inetboot_cache_hits_total", "counter", "Chunk cache hits", [[{}, c.hits]]),
      family("inetboot_cache_misses_total", "counter", "Chunk cache misses", [[{}, c.misses]]),
      family("inetboot_cache_evictions_total", "counter", "Chunks evicted from the cache", [
        [{}, c.evictions],
      ]),
      family("inetboot_cache_bytes", "gauge", "Bytes in the chunk cache", [[{}, cache.totalBytes]]),
      family("inetboot_cache_quota_bytes", "gauge", "The chunk cache's quota", [
        [{}, cache.quotaBytes],
      ]),
    );
  }
  const mirrors = opened.flatMap((o) =>
    o.stack.mirrorStats().map((m) => ({ entry: o.entry, ...m })),
  );
  if (mirrors.length) {
    const l = (m: (typeof mirrors)[number]): Record<string, string> => ({
      entry: m.entry,
      mirror: m.location,
    });
    out.push(
      family(
        "inetboot_mirror_requests_total",
        "counter",
        "Chunk requests per mirror",
        mirrors.map((m) => [l(m), m.requests]),
      ),
      family(
        "inetboot_mirror_failures_total",
        "counter",
        "Failed chunk requests per mirror",
        mirrors.map((m) => [l(m), m.failures]),
      ),
      family(
        "inetboot_mirror_failovers_total",
        "counter",
        "Chunks fetched from another mirror after this one failed",
        mirrors.map((m) => [l(m), m.failovers]),
      ),
      family(
        "inetboot_mirror_healthy",
        "gauge",
        "1 when the mirror is not penalised",
        mirrors.map((m) => [l(m), m.healthy ? 1 : 0]),
      ),
    );
  }
  if (opened.length) {
    out.push(
      family(
        "inetboot_image_fetched_bytes_total",
        "counter",
        "Chunk bytes fetched for an image (mirrors and boot pack)",
        opened.map((o) => [
          { entry: o.entry },
          (o.stack.mirrors?.fetchedBytes ?? 0) + (o.stack.pack?.deliveredBytes ?? 0),
        ]),
      ),
      family(
        "inetboot_image_read_bytes",
        "gauge",
        "Distinct bytes machines read from an image",
        opened.map((o) => [{ entry: o.entry }, o.trace.coveredBytes]),
      ),
    );
  }
  const isoStats: [Record<string, string>, NonNullable<LiveIso["cacheStats"]>][] = [];
  for (const [entry, p] of s.isos.opening) {
    const c = (await p.catch(() => null))?.cacheStats;
    if (c) isoStats.push([{ entry }, c]);
  }
  if (isoStats.length) {
    out.push(
      family(
        "inetboot_iso_fetched_bytes_total",
        "counter",
        "ISO bytes fetched from the origin",
        isoStats.map(([l, c]) => [l, c.fetchedBytes]),
      ),
      family(
        "inetboot_iso_cache_hits_total",
        "counter",
        "ISO blocks read from the block cache",
        isoStats.map(([l, c]) => [l, c.hits]),
      ),
      family(
        "inetboot_iso_cache_misses_total",
        "counter",
        "ISO blocks fetched from the origin",
        isoStats.map(([l, c]) => [l, c.misses]),
      ),
    );
  }
  return out;
}
