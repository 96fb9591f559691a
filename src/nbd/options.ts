// What an NBD server is configured with: its exports and its limits, with the defaults.
import type { BlockDevice } from "../block/block-device.ts";
import type { Logger } from "../lib/log.ts";
import { stripUndefined } from "../lib/options.ts";

export interface NbdExport {
  name: string;
  description?: string;
  device: BlockDevice;
  /**
   * Which clients may see and open it (by remote address; undefined for unix sockets). Others
   * are told it does not exist. Absent: every client.
   */
  allow?: (remote: string | undefined) => boolean;
  /** false: opened by its name only, never listed (names that are secrets). Default true. */
  listed?: boolean;
}

export interface NbdServerOptions {
  exports: NbdExport[];
  /**
   * Whether a client asking for the empty name gets the first export (handy for one-export
   * servers; off where each export belongs to one machine).
   */
  defaultExport?: boolean;
  logger?: Logger;
  /** Largest READ or WRITE accepted (bigger get EOVERFLOW/EINVAL). */
  maxRequestBytes?: number;
  /** Bytes of requests being served per connection before it stops reading new ones. */
  maxInFlightPerConnection?: number;
  /** The same, summed over all connections. */
  maxInFlightPerServer?: number;
  /**
   * Milliseconds from accept to the transmission phase (NBD_OPT_GO / EXPORT_NAME done); a
   * connection still haggling then is closed. Connections in the transmission phase are never
   * timed out for idleness: a booted kernel may leave its root disk idle for hours.
   */
  handshakeTimeoutMs?: number;
  /** Open connections in all (any phase); one more is closed at once. */
  maxConnections?: number;
  /** Open connections from one remote address (TCP only); one more is closed at once. */
  maxConnectionsPerAddress?: number;
  /**
   * Called when a connection that reached the transmission phase ends, with the name of the
   * export it was attached to and the client's address (undefined for unix sockets).
   */
  onDisconnect?: (exportName: string, remote: string | undefined) => void;
  /** How export names appear in logs (names that carry a secret are cut). Default: as they are. */
  logName?: (exportName: string) => string;
}

/** Time a client has to finish the handshake: real clients need milliseconds. */
export const DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS: number = 10_000;
/** Connections in all: a few per machine booted, far above any LAN's needs. */
export const DEFAULT_NBD_MAX_CONNECTIONS: number = 512;
/** Connections from one address: qemu/nbdcopy multi-conn use up to 4-8 per disk. */
export const DEFAULT_NBD_MAX_CONNECTIONS_PER_ADDRESS: number = 16;

export const DEFAULT_NBD_OPTIONS = Object.freeze({
  maxRequestBytes: 32 * 1024 * 1024,
  maxInFlightPerConnection: 64 * 1024 * 1024,
  maxInFlightPerServer: 256 * 1024 * 1024,
  handshakeTimeoutMs: DEFAULT_NBD_HANDSHAKE_TIMEOUT_MS,
  maxConnections: DEFAULT_NBD_MAX_CONNECTIONS,
  maxConnectionsPerAddress: DEFAULT_NBD_MAX_CONNECTIONS_PER_ADDRESS,
});

/** The limits a server runs with: every one set. */
export type NbdLimits = typeof DEFAULT_NBD_OPTIONS;

/** The limits of `options`, defaults filling those not given. */
export function resolveNbdLimits(options: NbdServerOptions): NbdLimits {
  const { maxRequestBytes, maxInFlightPerConnection, maxInFlightPerServer } = options;
  const { handshakeTimeoutMs, maxConnections, maxConnectionsPerAddress } = options;
  return {
    ...DEFAULT_NBD_OPTIONS,
    ...stripUndefined({
      maxRequestBytes,
      maxInFlightPerConnection,
      maxInFlightPerServer,
      handshakeTimeoutMs,
      maxConnections,
      maxConnectionsPerAddress,
    }),
  };
}
