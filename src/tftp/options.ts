// What a TFTP server is configured with: its tree, its address and its bounds against floods,
// with the defaults; and what it reports of each transfer.
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
  /** Transfers at once, all clients together; past it a request gets "server busy". */
  maxTransfers?: number;
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
  maxTransfersPerClient: number;
  maxTimeoutSeconds: number;
  maxRetransmitWaitMs: number;
  maxTransferMs: number;
};

/**
 * Default cap on transfers at once. Each holds a socket and a file descriptor, so 256 keep the
 * process ~512 descriptors under a 1,024 limit with room for HTTP and NBD; a LAN booting 256
 * machines at the same instant is larger than any this server is meant for.
 */
export const DEFAULT_TFTP_MAX_TRANSFERS = 256;
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
  maxTransfersPerClient: DEFAULT_TFTP_MAX_TRANSFERS_PER_CLIENT,
  maxTimeoutSeconds: MAX_TIMEOUT_SECONDS,
  maxRetransmitWaitMs: DEFAULT_TFTP_MAX_RETRANSMIT_WAIT_MS,
  maxTransferMs: DEFAULT_TFTP_MAX_TRANSFER_MS,
});
