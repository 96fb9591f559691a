// NBD wire format (fixed newstyle): constants and pure encoders/decoders, no sockets.
// Reference: the NBD protocol, doc/proto.md in NetworkBlockDevice/nbd.

export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const NBD_OPTS_MAGIC = 0x49484156454f5054n; // "IHAVEOPT"
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server) and client flags.
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags.
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

// Option replies.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_ERR_UNSUP = 2 ** 31 + 1;
export const NBD_REP_ERR_POLICY = 2 ** 31 + 2;
export const NBD_REP_ERR_INVALID = 2 ** 31 + 3;
export const NBD_REP_ERR_UNKNOWN = 2 ** 31 + 6;
export const NBD_REP_ERR_TOO_BIG = 2 ** 31 + 9;

// NBD_REP_INFO types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Commands and command flags.
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;

// Structured reply types and flags.
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 2 ** 15 + 1;

// base:allocation status bits.
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
export const BASE_ALLOCATION = "base:allocation";

// Errors (Linux errno values, as the protocol specifies).
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

export const OPTION_HEADER_SIZE = 16;
export const REQUEST_HEADER_SIZE = 28;
/** The longest option payload we accept (names are at most 4096 bytes by the spec). */
export const MAX_OPTION_LENGTH = 64 * 1024;

export function encodeHandshake(): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  b.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return b;
}

export interface OptionHeader {
  option: number;
  length: number;
}

export class NbdProtocolError extends Error {
  readonly code = "ERR_NBD_PROTOCOL";
}

export function decodeOptionHeader(b: Buffer): OptionHeader {
  if (b.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) {
    throw new NbdProtocolError(
      "Option does not start with IHAVEOPT: not an NBD client, or it lost sync",
    );
  }
  return { option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

export function encodeOptionReply(
  option: number,
  type: number,
  data: Uint8Array = Buffer.alloc(0),
): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(b, 20);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, flags, and no zero padding (NO_ZEROES negotiated) or 124. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : 124));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

export function encodeInfoExport(size: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(flags, 10);
  return b;
}

export function encodeInfoBlockSize(min: number, preferred: number, max: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(min, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(max, 10);
  return b;
}

export function encodeInfoString(type: number, text: string): Buffer {
  const s = Buffer.from(text);
  const b = Buffer.alloc(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

/** Payload of NBD_OPT_INFO / NBD_OPT_GO: export name and the info types requested. */
export function decodeInfoRequest(data: Buffer): { name: string; requests: number[] } {
  if (data.length < 6)
    throw new NbdProtocolError(`NBD_OPT_GO payload is ${data.length} bytes, expected at least 6`);
  const nameLength = data.readUInt32BE(0);
  if (4 + nameLength + 2 > data.length) {
    throw new NbdProtocolError(
      `NBD_OPT_GO name length ${nameLength} overruns the ${data.length}-byte payload`,
    );
  }
  const name = data.toString("utf8", 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (4 + nameLength + 2 + 2 * count !== data.length) {
    throw new NbdProtocolError(
      `NBD_OPT_GO lists ${count} info requests but the payload is ${data.length} bytes`,
    );
  }
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
  return { name, requests };
}

/** Payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export function decodeMetaContextRequest(data: Buffer): { name: string; queries: string[] } {
  let pos = 0;
  const need = (n: number): void => {
    if (pos + n > data.length) throw new NbdProtocolError("Meta context request is truncated");
  };
  need(4);
  const nameLength = data.readUInt32BE(pos);
  pos += 4;
  need(nameLength);
  const name = data.toString("utf8", pos, pos + nameLength);
  pos += nameLength;
  need(4);
  const count = data.readUInt32BE(pos);
  pos += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    need(4);
    const len = data.readUInt32BE(pos);
    pos += 4;
    need(len);
    queries.push(data.toString("utf8", pos, pos + len));
    pos += len;
  }
  if (pos !== data.length) throw new NbdProtocolError("Meta context request has trailing bytes");
  return { name, queries };
}

export function encodeMetaContext(id: number, name: string): Buffer {
  const s = Buffer.from(name);
  const b = Buffer.alloc(4 + s.length);
  b.writeUInt32BE(id, 0);
  s.copy(b, 4);
  return b;
}

export function encodeServerEntry(name: string): Buffer {
  const s = Buffer.from(name);
  const b = Buffer.alloc(4 + s.length);
  b.writeUInt32BE(s.length, 0);
  s.copy(b, 4);
  return b;
}

export interface Request {
  flags: number;
  type: number;
  /** The client's opaque cookie, echoed in replies (kept as 8 raw bytes). */
  handle: Buffer;
  offset: number;
  length: number;
}

export function decodeRequest(b: Buffer): Request {
  if (b.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
    throw new NbdProtocolError(
      `Request magic is 0x${b.readUInt32BE(0).toString(16)}, expected 0x25609513`,
    );
  }
  // (Two 32-bit halves, not a BigInt: this runs once per request.)
  const high = b.readUInt32BE(16);
  const offset = high * 2 ** 32 + b.readUInt32BE(20);
  return {
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    handle: Buffer.from(b.subarray(8, 16)),
    // Offsets past 2^53 are out of range for any device anyway; keep them out of range.
    offset: high >= 2 ** 21 ? Number.MAX_SAFE_INTEGER : offset,
    length: b.readUInt32BE(24),
  };
}

export function encodeSimpleReply(handle: Buffer, error: number): Buffer {
  const b = Buffer.allocUnsafe(16); // every byte is written
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  handle.copy(b, 8);
  return b;
}

/** The header of a read's NBD_REPLY_TYPE_OFFSET_DATA chunk, with its offset: data follows. */
export function encodeOffsetDataHeader(handle: Buffer, offset: number, length: number): Buffer {
  const b = encodeStructuredHeader(
    handle,
    NBD_REPLY_FLAG_DONE,
    NBD_REPLY_TYPE_OFFSET_DATA,
    8 + length,
    8,
  );
  b.writeUInt32BE(Math.floor(offset / 2 ** 32), 20);
  b.writeUInt32BE(offset % 2 ** 32, 24);
  return b;
}

export function encodeStructuredHeader(
  handle: Buffer,
  flags: number,
  type: number,
  length: number,
  /** Room for this many bytes of the payload after the header. */
  extra = 0,
): Buffer {
  // From Node's shared pool, not an ArrayBuffer of its own per reply (the extra bytes are
  // zeroed: the caller may fill only part of them).
  const b = Buffer.allocUnsafe(20 + extra);
  b.fill(0, 20);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  handle.copy(b, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

export function encodeStructuredError(handle: Buffer, error: number, message: string): Buffer {
  const msg = Buffer.from(message.slice(0, 4096));
  const payload = Buffer.alloc(6 + msg.length);
  payload.writeUInt32BE(error, 0);
  payload.writeUInt16BE(msg.length, 4);
  msg.copy(payload, 6);
  return Buffer.concat([
    encodeStructuredHeader(handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, payload.length),
    payload,
  ]);
}
