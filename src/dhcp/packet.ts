// DHCP/BOOTP packets (RFC 2131, RFC 2132): a pure codec. Options are kept as raw bytes in
// arrival order (unknown ones included), with typed readers and writers for the ones netboot
// uses. Decoding never throws anything but DhcpDecodeError.

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const MAGIC_COOKIE = 0x63825363;
/** Fixed BOOTP header: 236 bytes, then the 4-byte magic cookie, then options. */
export const HEADER_BYTES = 236;
/** The smallest BOOTP message (RFC 951): old PXE ROMs drop shorter replies. */
export const MIN_PACKET_BYTES = 300;

export const Opt = Object.freeze({
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  ROOT_PATH: 17,
  BROADCAST: 28,
  VENDOR_SPECIFIC: 43,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_LIST: 55,
  MESSAGE: 56,
  MAX_MESSAGE_SIZE: 57,
  RENEWAL_TIME: 58,
  REBINDING_TIME: 59,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER: 66,
  BOOTFILE: 67,
  USER_CLASS: 77,
  CLIENT_ARCH: 93,
  CLIENT_NDI: 94,
  CLIENT_UUID: 97,
  IPXE_ENCAP: 175,
  END: 255,
});

export const MessageType = Object.freeze({
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
});

const MESSAGE_TYPE_NAMES = [
  "",
  "DISCOVER",
  "OFFER",
  "REQUEST",
  "DECLINE",
  "ACK",
  "NAK",
  "RELEASE",
  "INFORM",
];

export function messageTypeName(type: number | undefined): string {
  return type !== undefined && MESSAGE_TYPE_NAMES[type] ? MESSAGE_TYPE_NAMES[type] : `type-${type}`;
}

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** 16 bytes as sent; `hlen` of them are the hardware address. */
  chaddr: Buffer;
  /** Server host name field (64 bytes), NUL-trimmed; empty when it carried options. */
  sname: string;
  /** Boot file field (128 bytes), NUL-trimmed; empty when it carried options. */
  file: string;
  /** Options in arrival order, concatenated per code (RFC 3396), without PAD and END. */
  options: Map<number, Buffer>;
}

export class DhcpDecodeError extends Error {}

/**
 * A client's broadcast request (DISCOVER, REQUEST) from a machine with no address yet:
 * `chaddr` is the 16-byte field (the hardware address first), `options` in order.
 */
export function clientRequest(
  xid: number,
  chaddr: Buffer,
  options: Map<number, Buffer>,
): DhcpPacket {
  return {
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid,
    secs: 0,
    flags: BROADCAST_FLAG,
    ciaddr: "0.0.0.0",
    yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0",
    giaddr: "0.0.0.0",
    chaddr,
    sname: "",
    file: "",
    options,
  };
}

export const BROADCAST_FLAG = 0x8000;

export function ipToString(buf: Buffer, offset = 0): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function isIpv4(text: string): boolean {
  const m = IPV4.exec(text);
  return m !== null && m.slice(1).every((p) => Number(p) <= 255);
}

export function ipToNumber(text: string): number {
  const m = IPV4.exec(text);
  if (!m || m.slice(1).some((p) => Number(p) > 255)) {
    throw new Error(`"${text}" is not an IPv4 address`);
  }
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function numberToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function ipToBuffer(text: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(ipToNumber(text));
  return b;
}

/** The hardware address as lower-case colon hex ("52:54:00:12:34:56"). */
export function macOf(packet: DhcpPacket): string {
  const len = Math.min(packet.hlen, 16);
  return formatMac(packet.chaddr.subarray(0, len));
}

export function formatMac(bytes: Buffer): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(":");
}

export function parseMac(text: string): Buffer {
  const parts = text.trim().toLowerCase().split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{1,2}$/.test(p))) {
    throw new Error(
      `"${text}" is not a MAC address (expected six hex bytes like 52:54:00:12:34:56)`,
    );
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

function trimNul(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString("latin1");
}

/** Parses one options area into `into`, appending repeated codes (RFC 3396 long options). */
function readOptions(area: Buffer, into: Map<number, Buffer>, where: string): void {
  let pos = 0;
  while (pos < area.length) {
    const code = area[pos++];
    if (code === Opt.PAD) continue;
    if (code === Opt.END) return;
    if (pos >= area.length) throw new DhcpDecodeError(`option ${code} in ${where} has no length`);
    const len = area[pos++];
    if (pos + len > area.length) {
      throw new DhcpDecodeError(
        `option ${code} in ${where} claims ${len} bytes but only ${area.length - pos} remain`,
      );
    }
    const value = area.subarray(pos, pos + len);
    pos += len;
    const prev = into.get(code);
    into.set(code, prev ? Buffer.concat([prev, value]) : Buffer.from(value));
  }
}

export function decodePacket(buf: Buffer): DhcpPacket {
  if (buf.length < HEADER_BYTES + 4) {
    throw new DhcpDecodeError(`packet of ${buf.length} bytes is shorter than a DHCP header (240)`);
  }
  const op = buf[0];
  if (op !== BOOTREQUEST && op !== BOOTREPLY) throw new DhcpDecodeError(`bad op ${op}`);
  if (buf.readUInt32BE(HEADER_BYTES) !== MAGIC_COOKIE) {
    throw new DhcpDecodeError("no DHCP magic cookie (plain BOOTP is not supported)");
  }
  const options = new Map<number, Buffer>();
  readOptions(buf.subarray(HEADER_BYTES + 4), options, "options");
  const snameField = buf.subarray(44, 108);
  const fileField = buf.subarray(108, 236);
  const overload = options.get(Opt.OVERLOAD)?.[0] ?? 0;
  if (overload & 1) readOptions(fileField, options, "file field");
  if (overload & 2) readOptions(snameField, options, "sname field");
  return {
    op,
    htype: buf[1],
    hlen: buf[2],
    hops: buf[3],
    xid: buf.readUInt32BE(4),
    secs: buf.readUInt16BE(8),
    flags: buf.readUInt16BE(10),
    ciaddr: ipToString(buf, 12),
    yiaddr: ipToString(buf, 16),
    siaddr: ipToString(buf, 20),
    giaddr: ipToString(buf, 24),
    chaddr: Buffer.from(buf.subarray(28, 44)),
    sname: overload & 2 ? "" : trimNul(snameField),
    file: overload & 1 ? "" : trimNul(fileField),
    options,
  };
}

function writeOption(parts: Buffer[], code: number, value: Buffer): void {
  // Values over 255 bytes are split into several instances of the code (RFC 3396).
  for (let pos = 0; pos < value.length || pos === 0; pos += 255) {
    const piece = value.subarray(pos, pos + 255);
    parts.push(Buffer.from([code, piece.length]), piece);
    if (value.length === 0) break;
  }
}

/** Encodes a packet; message type (53) first, END last, padded to the 300-byte BOOTP minimum. */
export function encodePacket(p: DhcpPacket): Buffer {
  const head = Buffer.alloc(HEADER_BYTES + 4);
  head[0] = p.op;
  head[1] = p.htype;
  head[2] = p.hlen;
  head[3] = p.hops;
  head.writeUInt32BE(p.xid >>> 0, 4);
  head.writeUInt16BE(p.secs, 8);
  head.writeUInt16BE(p.flags, 10);
  ipToBuffer(p.ciaddr).copy(head, 12);
  ipToBuffer(p.yiaddr).copy(head, 16);
  ipToBuffer(p.siaddr).copy(head, 20);
  ipToBuffer(p.giaddr).copy(head, 24);
  p.chaddr.copy(head, 28, 0, 16);
  if (Buffer.byteLength(p.sname, "latin1") > 63) throw new Error("sname longer than 63 bytes");
  if (Buffer.byteLength(p.file, "latin1") > 127) throw new Error("file longer than 127 bytes");
  head.write(p.sname, 44, "latin1");
  head.write(p.file, 108, "latin1");
  head.writeUInt32BE(MAGIC_COOKIE, HEADER_BYTES);
  const parts: Buffer[] = [head];
  const type = p.options.get(Opt.MESSAGE_TYPE);
  if (type) writeOption(parts, Opt.MESSAGE_TYPE, type);
  for (const [code, value] of p.options) {
    if (code === Opt.MESSAGE_TYPE || code === Opt.PAD || code === Opt.END) continue;
    writeOption(parts, code, value);
  }
  parts.push(Buffer.from([Opt.END]));
  const out = Buffer.concat(parts);
  return out.length >= MIN_PACKET_BYTES
    ? out
    : Buffer.concat([out, Buffer.alloc(MIN_PACKET_BYTES - out.length)]);
}

// Typed option readers. Each returns undefined when the option is absent or malformed.

export function optU8(p: DhcpPacket, code: number): number | undefined {
  const v = p.options.get(code);
  return v && v.length >= 1 ? v[0] : undefined;
}

export function optU16(p: DhcpPacket, code: number): number | undefined {
  const v = p.options.get(code);
  return v && v.length >= 2 ? v.readUInt16BE(0) : undefined;
}

export function optU32(p: DhcpPacket, code: number): number | undefined {
  const v = p.options.get(code);
  return v && v.length >= 4 ? v.readUInt32BE(0) : undefined;
}

export function optIp(p: DhcpPacket, code: number): string | undefined {
  const v = p.options.get(code);
  return v && v.length >= 4 ? ipToString(v) : undefined;
}

export function optString(p: DhcpPacket, code: number): string | undefined {
  const v = p.options.get(code);
  if (!v) return undefined;
  const end = v.indexOf(0);
  return v.subarray(0, end < 0 ? v.length : end).toString("latin1");
}

export function messageType(p: DhcpPacket): number | undefined {
  return optU8(p, Opt.MESSAGE_TYPE);
}

/** Option 93: the client's architecture types (RFC 4578), a list of 16-bit codes. */
export function clientArchs(p: DhcpPacket): number[] {
  const v = p.options.get(Opt.CLIENT_ARCH);
  if (!v) return [];
  const out: number[] = [];
  for (let i = 0; i + 1 < v.length; i += 2) out.push(v.readUInt16BE(i));
  return out;
}

/** Option 97: client machine UUID (type 0 + 16 bytes), as a lower-case RFC 4122 string. */
export function clientUuid(p: DhcpPacket): string | undefined {
  const v = p.options.get(Opt.CLIENT_UUID);
  if (!v || v.length !== 17 || v[0] !== 0) return undefined;
  const h = v.subarray(1).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Option 77 user classes. RFC 3004 frames each class with a length byte; iPXE and many others
 * send one bare string instead. Both are accepted.
 */
export function userClasses(p: DhcpPacket): string[] {
  const v = p.options.get(Opt.USER_CLASS);
  if (!v || v.length === 0) return [];
  const framed: string[] = [];
  let pos = 0;
  while (pos < v.length) {
    const len = v[pos];
    if (len === 0 || pos + 1 + len > v.length) return [v.toString("latin1")];
    framed.push(v.subarray(pos + 1, pos + 1 + len).toString("latin1"));
    pos += 1 + len;
  }
  return framed;
}

/** Sub-options of an encapsulated option (43, 175): code → value. */
export function subOptions(value: Buffer | undefined): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  if (!value) return out;
  let pos = 0;
  while (pos + 1 < value.length) {
    const code = value[pos];
    if (code === 0) {
      pos++;
      continue;
    }
    if (code === 255) break;
    const len = value[pos + 1];
    if (pos + 2 + len > value.length) break;
    out.set(code, value.subarray(pos + 2, pos + 2 + len));
    pos += 2 + len;
  }
  return out;
}

export function encodeSubOptions(entries: [number, Buffer][]): Buffer {
  const parts: Buffer[] = [];
  for (const [code, value] of entries) parts.push(Buffer.from([code, value.length]), value);
  parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}

/** Option 55: the codes the client asked for. */
export function requestedParameters(p: DhcpPacket): number[] {
  return [...(p.options.get(Opt.PARAMETER_LIST) ?? [])];
}

export function u8(n: number): Buffer {
  return Buffer.from([n]);
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function ips(list: string[]): Buffer {
  return Buffer.concat(list.map(ipToBuffer));
}

export function str(text: string): Buffer {
  return Buffer.from(text, "latin1");
}
