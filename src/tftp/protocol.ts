// TFTP packets (RFC 1350) with options (RFC 2347 OACK, 2348 blksize, 2349 timeout and tsize,
// 7440 windowsize): a pure codec. Decoding throws only TftpDecodeError.

export const Op = Object.freeze({ RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 });

export const ErrorCode = Object.freeze({
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_REFUSED: 8,
});

export const DEFAULT_BLKSIZE = 512;
export const MIN_BLKSIZE = 8;
export const MAX_BLKSIZE = 65464;
export const MAX_WINDOWSIZE = 65535;
/**
 * Default cap on a window's bytes (RFC 7440 lets the server answer a smaller windowsize):
 * measured with atftp over a veth, 16 × 8192-byte blocks lose packets and fall to 0.5 MB/s,
 * 8 × 8192 runs at 110 MB/s.
 */
export const MAX_WINDOW_BYTES = 64 * 1024;
/**
 * Default longest retransmission timeout a client may ask for, in seconds. RFC 2349 allows
 * 1–255 but says the OACK must echo the client's value unchanged, so a longer one is left out of
 * the OACK (the server's default applies). 10 s covers any real link; 255 s let one spoofed
 * request hold a socket for half an hour.
 */
export const MAX_TIMEOUT_SECONDS = 10;

export type TftpPacket =
  | { op: 1 | 2; filename: string; mode: string; options: Map<string, string> }
  | { op: 3; block: number; data: Buffer }
  | { op: 4; block: number }
  | { op: 5; code: number; message: string }
  | { op: 6; options: Map<string, string> };

export class TftpDecodeError extends Error {}

/** Splits NUL-terminated strings; the last one must be terminated too. */
function strings(buf: Buffer, from: number): string[] {
  const out: string[] = [];
  let pos = from;
  while (pos < buf.length) {
    const end = buf.indexOf(0, pos);
    if (end < 0) throw new TftpDecodeError("string not NUL-terminated");
    out.push(buf.subarray(pos, end).toString("latin1"));
    pos = end + 1;
  }
  return out;
}

function optionPairs(list: string[], what: string): Map<string, string> {
  if (list.length % 2 !== 0)
    throw new TftpDecodeError(`${what}: option "${list.at(-1)}" has no value`);
  const options = new Map<string, string>();
  for (let i = 0; i < list.length; i += 2) options.set(list[i].toLowerCase(), list[i + 1]);
  return options;
}

export function decodeTftp(buf: Buffer): TftpPacket {
  if (buf.length < 4) throw new TftpDecodeError(`packet of ${buf.length} bytes is too short`);
  const op = buf.readUInt16BE(0);
  switch (op) {
    case Op.RRQ:
    case Op.WRQ: {
      const [filename, mode, ...rest] = strings(buf, 2);
      if (filename === undefined || mode === undefined) {
        throw new TftpDecodeError("request without filename and mode");
      }
      if (filename.length === 0) throw new TftpDecodeError("empty filename");
      return { op, filename, mode: mode.toLowerCase(), options: optionPairs(rest, "request") };
    }
    case Op.DATA:
      return { op, block: buf.readUInt16BE(2), data: buf.subarray(4) };
    case Op.ACK:
      return { op, block: buf.readUInt16BE(2) };
    case Op.ERROR: {
      const end = buf.indexOf(0, 4);
      return {
        op,
        code: buf.readUInt16BE(2),
        message: buf.subarray(4, end < 0 ? buf.length : end).toString("latin1"),
      };
    }
    case Op.OACK:
      return { op, options: optionPairs(strings(buf, 2), "OACK") };
    default:
      throw new TftpDecodeError(`unknown opcode ${op}`);
  }
}

function cstrings(list: string[]): Buffer[] {
  return list.map((s) => Buffer.from(`${s}\0`, "latin1"));
}

function opcode(op: number, extra = 0): Buffer {
  const b = Buffer.alloc(2 + extra);
  b.writeUInt16BE(op);
  return b;
}

export function encodeTftp(p: TftpPacket): Buffer {
  switch (p.op) {
    case Op.RRQ:
    case Op.WRQ:
      return Buffer.concat([
        opcode(p.op),
        ...cstrings([p.filename, p.mode, ...[...p.options].flat()]),
      ]);
    case Op.DATA: {
      const head = opcode(p.op, 2);
      head.writeUInt16BE(p.block & 0xffff, 2);
      return Buffer.concat([head, p.data]);
    }
    case Op.ACK: {
      const b = opcode(p.op, 2);
      b.writeUInt16BE(p.block & 0xffff, 2);
      return b;
    }
    case Op.ERROR: {
      const head = opcode(p.op, 2);
      head.writeUInt16BE(p.code, 2);
      return Buffer.concat([head, ...cstrings([p.message])]);
    }
    case Op.OACK:
      return Buffer.concat([opcode(p.op), ...cstrings([...p.options].flat())]);
  }
}

/** The 4-byte head of a DATA packet (sent with the data as a second buffer, no copy). */
export function dataHeader(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(Op.DATA, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

export interface NegotiatedOptions {
  blksize: number;
  windowsize: number;
  /** Retransmission timeout in milliseconds. */
  timeoutMs: number;
  /** The options to acknowledge in an OACK (empty: none were accepted; send no OACK). */
  accepted: Map<string, string>;
}

/**
 * Applies RFC 2347–2349 and 7440 to a read request's options. Unknown or out-of-range options
 * are left out of the OACK (the client then uses the defaults), as the RFCs say.
 */
export function negotiate(
  options: Map<string, string>,
  limits: {
    maxBlksize: number;
    maxWindowsize: number;
    defaultTimeoutMs: number;
    /** The file's size for tsize; null when unknown (netascii): tsize is left out of the OACK. */
    size: number | null;
    /** Longest timeout option accepted, in seconds (default MAX_TIMEOUT_SECONDS). */
    maxTimeoutSeconds?: number;
    /** Bytes one window may carry: bigger bursts overflow client buffers and stall on loss. */
    maxWindowBytes?: number;
  },
): NegotiatedOptions {
  const accepted = new Map<string, string>();
  let blksize = DEFAULT_BLKSIZE;
  let windowsize = 1;
  let timeoutMs = limits.defaultTimeoutMs;
  const int = (v: string | undefined): number | undefined =>
    v !== undefined && /^\d{1,10}$/.test(v) ? Number(v) : undefined;
  const b = int(options.get("blksize"));
  if (b !== undefined && b >= MIN_BLKSIZE) {
    blksize = Math.min(b, limits.maxBlksize, MAX_BLKSIZE);
    accepted.set("blksize", String(blksize));
  }
  // RFC 2349: 1-255 seconds, echoed unchanged or not at all; we accept up to maxTimeoutSeconds.
  const t = int(options.get("timeout"));
  if (
    t !== undefined &&
    t >= 1 &&
    t <= Math.min(255, limits.maxTimeoutSeconds ?? MAX_TIMEOUT_SECONDS)
  ) {
    timeoutMs = t * 1000;
    accepted.set("timeout", String(t));
  }
  const ts = int(options.get("tsize"));
  // RFC 2349 lets the server leave tsize out; it does when the size is not known beforehand.
  if (ts !== undefined && limits.size !== null) accepted.set("tsize", String(limits.size));
  const w = int(options.get("windowsize"));
  if (w !== undefined && w >= 1) {
    const byBytes = Math.max(1, Math.floor((limits.maxWindowBytes ?? MAX_WINDOW_BYTES) / blksize));
    windowsize = Math.min(w, limits.maxWindowsize, byBytes, MAX_WINDOWSIZE);
    accepted.set("windowsize", String(windowsize));
  }
  return { blksize, windowsize, timeoutMs, accepted };
}
