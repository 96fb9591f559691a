// What a TFTP server is configured with: its tree, its address and its bounds against floods,
// with the defaults; and what it reports of each transfer.
import { readFileSync } from "node:fs";
import type { Logger } from "../lib/log.ts";
import { MAX_BLKSIZE, MAX_TIMEOUT_SECONDS } from "./protocol.ts";
import type { TftpTree } from "./tree.ts";

export interface TftpTransferEvent {
  stage: "tftp-start" | "tftp-done" | "tftp-error";
  client: string;
  file: string;
  bytes?: number;
  ms?: number;
  blksize?: number;
  windowsize?: number;
  error?: string;
}

export interface TftpServerOptions {
  tree: TftpTree;
  port?: number;
  address?: string;
  interface?: string;
  maxBlksize?: number;
  maxWindowsize?: number;
  /** Retransmission timeout when the client asks for none. */
  timeoutMs?: number;
  /** Retransmissions of one window before the transfer is abandoned. */
  retries?: number;
  /** Transfers at once, all clients together; past it a request waits in the queue. */
  maxTransfers?: number;
  /**
   * Requests waiting for a transfer slot (a lab powering on at once); past it a request gets
   * "server busy", an ERROR most PXE ROMs end the boot on, so the queue is deep.
   */
  maxQueued?: number;
  /** Longest a request waits queued; older ones are dropped unanswered (the client retries). */
  queueWaitMs?: number;
  /** Transfers at once from one client address. */
  maxTransfersPerClient?: number;
  /** Longest timeout option (RFC 2349) accepted, in seconds; longer ones are not acknowledged. */
  maxTimeoutSeconds?: number;
  /** Longest wait for an ACK before a retransmission, however the backoff has grown. */
  maxRetransmitWaitMs?: number;
  /** Longest a transfer may live, start to last ACK; past it it is abandoned. */
  maxTransferMs?: number;
  logger?: Logger;
  onEvent?: (event: TftpTransferEvent) => void;
}

export type ResolvedTftpOptions = TftpServerOptions & {
  port: number;
  address: string;
  maxBlksize: number;
  maxWindowsize: number;
  timeoutMs: number;
  retries: number;
  maxTransfers: number;
  maxQueued: number;
  queueWaitMs: number;
  maxTransfersPerClient: number;
  maxTimeoutSeconds: number;
  maxRetransmitWaitMs: number;
  maxTransferMs: number;
};

/**
 * Default cap on transfers at once. Each holds a socket and a file descriptor: 1,024 of them
 * where the process may open 4,096 files or more (Node raises its soft limit to the hard one;
 * systemd gives services 524,288), else what half of the limit beyond 512 allows, at least 64.
 */
export const DEFAULT_TFTP_MAX_TRANSFERS = transfersForFileLimit(openFileLimit());

/** The process's limit on open files (Linux's /proc), or 1,024 where it cannot be read. */
function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    return m ? (m[1] === "unlimited" ? Infinity : Number(m[1])) : 1024;
  } catch {
    return 1024;
  }
}

export function transfersForFileLimit(limit: number): number {
  return Math.max(64, Math.min(1024, Math.floor((limit - 512) / 2)));
}
/** Default queue of requests waiting for a slot: a 2,000-machine power-on, held as bytes only. */
export const DEFAULT_TFTP_MAX_QUEUED = 2048;
/** Default longest wait in the queue: PXE ROMs resend their request after about 4 s. */
export const DEFAULT_TFTP_QUEUE_WAIT_MS = 4000;
/** Default cap per client address: firmware fetches one file at a time, iPXE at most a few. */
export const DEFAULT_TFTP_MAX_TRANSFERS_PER_CLIENT = 8;
/** Default longest wait between retransmissions (the backoff doubles up to this). */
export const DEFAULT_TFTP_MAX_RETRANSMIT_WAIT_MS = 10_000;
/**
 * Default longest lifetime of one transfer: 15 minutes, a 450 MB file at lockstep 512-byte
 * blocks over a 1 ms LAN; boot files are far smaller.
 */
export const DEFAULT_TFTP_MAX_TRANSFER_MS = 15 * 60_000;
/** The error text a request gets when a cap is reached (ERROR code 0, RFC 1350 section 5). */
export const TFTP_BUSY_MESSAGE = "server busy, try again";

export const DEFAULT_TFTP_OPTIONS = Object.freeze({
  port: 69,
  address: "0.0.0.0",
  maxBlksize: MAX_BLKSIZE,
  maxWindowsize: 64,
  timeoutMs: 1000,
  retries: 6,
  maxTransfers: DEFAULT_TFTP_MAX_TRANSFERS,
  maxQueued: DEFAULT_TFTP_MAX_QUEUED,
  queueWaitMs: DEFAULT_TFTP_QUEUE_WAIT_MS,
  maxTransfersPerClient: DEFAULT_TFTP_MAX_TRANSFERS_PER_CLIENT,
  maxTimeoutSeconds: MAX_TIMEOUT_SECONDS,
  maxRetransmitWaitMs: DEFAULT_TFTP_MAX_RETRANSMIT_WAIT_MS,
  maxTransferMs: DEFAULT_TFTP_MAX_TRANSFER_MS,
});
