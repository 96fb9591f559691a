// How the server itself holds up under what the LAN sends: event-loop stalls (the longest in
// the last minute), memory and open files, and what the bounds turned away (busy TFTP, NBD
// connections refused or timed out in their handshake, per-boot exports waiting or in use).
// Prometheus families for /metrics; an operator (or the soak bench) watches these.
import { readdirSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";

import type { NbdServer } from "../nbd/server.ts";
import type { TftpServer } from "../tftp/server.ts";
import { family } from "./metrics.ts";
import type { Family } from "./metrics.ts";

/** The event-loop delay is kept per window; the gauge is the worst of the last WINDOWS. */
const WINDOW_MS = 10_000;
const WINDOWS = 6;

/** The longest event-loop stall of the last minute, and its 99th percentile. */
export class LoopDelay {
  readonly #h = monitorEventLoopDelay({ resolution: 10 });
  readonly #past: { max: number; p99: number }[] = [];
  readonly #timer: NodeJS.Timeout;

  constructor() {
    this.#h.enable();
    this.#timer = setInterval(() => {
      this.#past.push({ max: this.#h.max, p99: this.#h.percentile(99) });
      if (this.#past.length > WINDOWS - 1) this.#past.shift();
      this.#h.reset();
    }, WINDOW_MS);
    this.#timer.unref();
  }

  /** Seconds: the worst stall and the worst p99 over the last minute. */
  get lastMinute(): { max: number; p99: number } {
    const all = [...this.#past, { max: this.#h.max, p99: this.#h.percentile(99) }];
    // The histogram counts from the timer's resolution; an empty window reports 0.
    const max = Math.max(0, ...all.map((w) => w.max)) / 1e9;
    const p99 = Math.max(0, ...all.map((w) => w.p99)) / 1e9;
    return { max, p99 };
  }

  close(): void {
    clearInterval(this.#timer);
    this.#h.disable();
  }
}

export interface HealthSources {
  loop: LoopDelay;
  tftp: TftpServer | null;
  nbd: NbdServer | null;
  exports: { tickets: number; disks: number; opened: number } | null;
}

function openFiles(): number {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return 0;
  }
}

export function healthFamilies(s: HealthSources): Family[] {
  const { max, p99 } = s.loop.lastMinute;
  const out = [
    family(
      "inetboot_event_loop_delay_max_seconds",
      "gauge",
      "The longest event-loop stall in the last minute (every service waits that long)",
      [[{}, max]],
    ),
    family(
      "inetboot_event_loop_delay_p99_seconds",
      "gauge",
      "The 99th percentile of event-loop delay in the last minute",
      [[{}, p99]],
    ),
    family("process_resident_memory_bytes", "gauge", "Resident memory of the server", [
      [{}, process.memoryUsage.rss()],
    ]),
    family("process_open_fds", "gauge", "Open file descriptors of the server", [[{}, openFiles()]]),
  ];
  if (s.tftp) {
    out.push(
      family("inetboot_tftp_busy_total", "counter", "TFTP requests refused as busy (caps)", [
        [{}, s.tftp.stats.busy],
      ]),
    );
  }
  if (s.nbd) {
    const n = s.nbd.stats;
    out.push(
      family(
        "inetboot_nbd_refused_connections_total",
        "counter",
        "NBD connections closed at once: over the total or per-address cap",
        [[{}, n.refused]],
      ),
      family(
        "inetboot_nbd_handshake_timeouts_total",
        "counter",
        "NBD connections closed for not finishing the handshake in time",
        [[{}, n.handshakeTimeouts]],
      ),
    );
  }
  if (s.exports) {
    const e = s.exports;
    out.push(
      family("inetboot_nbd_boot_exports", "gauge", "Per-boot NBD exports, by state", [
        [{ state: "issued" }, e.tickets],
        [{ state: "disk-opened" }, e.opened],
      ]),
    );
  }
  return out;
}
