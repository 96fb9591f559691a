// An NBD server's counters for metrics: connections, requests by command, errors, data bytes.
import * as P from "./protocol.ts";

/** Counters for metrics: connections, requests by command, errors and data bytes. */
export interface NbdStats {
  connections: number;
  requests: Record<string, number>;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  /** Connections closed at accept for being past maxConnections / maxConnectionsPerAddress. */
  refused: number;
  /** Connections closed for not finishing the handshake within handshakeTimeoutMs. */
  handshakeTimeouts: number;
}

export function emptyNbdStats(): NbdStats {
  return {
    connections: 0,
    requests: {},
    errors: 0,
    bytesRead: 0,
    bytesWritten: 0,
    refused: 0,
    handshakeTimeouts: 0,
  };
}

const COMMAND_NAMES: Record<number, string> = {
  [P.NBD_CMD_READ]: "read",
  [P.NBD_CMD_WRITE]: "write",
  [P.NBD_CMD_FLUSH]: "flush",
  [P.NBD_CMD_TRIM]: "trim",
  [P.NBD_CMD_CACHE]: "cache",
  [P.NBD_CMD_WRITE_ZEROES]: "write_zeroes",
  [P.NBD_CMD_BLOCK_STATUS]: "block_status",
};

/** Counts one request of command `type` ("other" for commands without a name). */
export function countRequest(stats: NbdStats, type: number): void {
  const command = COMMAND_NAMES[type] ?? "other";
  stats.requests[command] = (stats.requests[command] ?? 0) + 1;
}
