// What one NBD connection may ask of the server that accepted it: the exports it may open, the
// limits, the counters, the shared in-flight budget, and the bookkeeping of attached clients.
// The server hands each connection this (and nothing more) instead of exposing it publicly.
import type { BufferPool } from "../lib/buffer-pool.ts";
import type { Logger } from "../lib/log.ts";
import type { NbdExport, NbdLimits } from "./options.ts";
import type { NbdStats } from "./stats.ts";

export interface ConnectionHost {
  readonly stats: NbdStats;
  /** Reply buffers shared by the server's connections, for devices that read into them. */
  readonly buffers: BufferPool;
  readonly limits: NbdLimits;
  readonly log: Logger;
  /** An export name as logs show it. */
  logName(name: string): string;
  /** The export `remote` asks for by name, if it exists and `remote` may open it. */
  exportNamed(name: string, remote: string | undefined): NbdExport | undefined;
  /** The names `remote` may see (NBD_OPT_LIST). */
  exportNames(remote: string | undefined): string[];
  /** Logs at most once per interval per key (events a client can cause at will). */
  warnLimited(message: string, detail: Record<string, unknown>, key?: string): void;
  /** Server-wide in-flight accounting: waits while the server as a whole is over its cap. */
  acquire(bytes: number): Promise<void>;
  release(bytes: number): void;
  /** A connection entered the transmission phase on export `name`. */
  attached(name: string): void;
  /** ... and left it (after its last request was answered). */
  detached(name: string, remote: string | undefined): void;
}
