// Building DHCP replies (pure: packets in, packets out): the reply skeleton to a request, the
// boot fields PXE and HTTP Boot firmware want, and where a reply is sent (RFC 2131 section 4.1).
import type { DhcpClient, BootAnswer } from "./options.ts";
import {
  BOOTREPLY,
  BROADCAST_FLAG,
  encodeSubOptions,
  ips,
  MessageType,
  messageType,
  Opt,
  str,
  u8,
} from "./packet.ts";
import type { DhcpPacket } from "./packet.ts";

const PXE_DISCOVERY_CONTROL = 6;
/** Discovery control bit 3: boot the file in this offer, no boot-server discovery or menu. */
const PXE_BOOT_FILE_DIRECTLY = 8;

/** A reply of `type` to `req` offering `yiaddr`, with our server identifier. */
export function replyTo(
  req: DhcpPacket,
  reply: { type: number; yiaddr: string; serverAddress: string },
): DhcpPacket {
  const { type, yiaddr, serverAddress } = reply;
  const options = new Map<number, Buffer>([
    [Opt.MESSAGE_TYPE, u8(type)],
    [Opt.SERVER_ID, ips([serverAddress])],
  ]);
  return {
    op: BOOTREPLY,
    htype: req.htype,
    hlen: req.hlen,
    hops: 0,
    xid: req.xid,
    secs: 0,
    flags: req.flags & BROADCAST_FLAG,
    ciaddr: type === MessageType.ACK ? req.ciaddr : "0.0.0.0",
    yiaddr,
    siaddr: "0.0.0.0",
    giaddr: req.giaddr,
    chaddr: req.chaddr,
    sname: "",
    file: "",
    options,
  };
}

/** Adds the boot file, next server and the vendor-class echo PXE and HTTP Boot want. */
export function addBoot(
  reply: DhcpPacket,
  boot: BootAnswer,
  options: { client: DhcpClient; serverAddress: string },
): void {
  const { client } = options;
  const next = boot.nextServer ?? options.serverAddress;
  reply.siaddr = next;
  if (Buffer.byteLength(boot.file) <= 127) reply.file = boot.file;
  if (next.length <= 63) reply.sname = next;
  reply.options.set(Opt.BOOTFILE, str(boot.file));
  reply.options.set(Opt.TFTP_SERVER, str(next));
  if (boot.rootPath) reply.options.set(Opt.ROOT_PATH, str(boot.rootPath));
  if (client.firmware.http) {
    reply.options.set(Opt.VENDOR_CLASS, str("HTTPClient"));
  } else if (client.firmware.pxe) {
    reply.options.set(Opt.VENDOR_CLASS, str("PXEClient"));
    reply.options.set(
      Opt.VENDOR_SPECIFIC,
      encodeSubOptions([[PXE_DISCOVERY_CONTROL, u8(PXE_BOOT_FILE_DIRECTLY)]]),
    );
  }
}

/** RFC 2131 4.1: relays get it on the server port; bound clients unicast; others broadcast. */
export function replyDestination(
  req: DhcpPacket,
  reply: DhcpPacket,
  ports: { serverPort: number; clientPort: number },
): { address: string; port: number } {
  if (req.giaddr !== "0.0.0.0") return { address: req.giaddr, port: ports.serverPort };
  if (req.ciaddr !== "0.0.0.0" && messageType(reply) !== MessageType.NAK) {
    return { address: req.ciaddr, port: ports.clientPort };
  }
  // Without raw sockets a not-yet-configured client cannot be unicast (no ARP entry).
  return { address: "255.255.255.255", port: ports.clientPort };
}
