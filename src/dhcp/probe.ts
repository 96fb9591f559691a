// "Is there a DHCP server on this link?": one DISCOVER broadcast from the client port, and the
// OFFERs that come back within a short time (`inetboot init` decides proxy or full mode from it).
// Nothing is leased: no REQUEST follows. Replies are bounded in count and must echo our xid.
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { bindToInterface, bindUdp } from "../net/interface.ts";
import {
  clientRequest,
  decodePacket,
  encodePacket,
  messageType,
  MessageType,
  Opt,
  optIp,
  optString,
  parseMac,
  u8,
} from "./packet.ts";

export interface DhcpOfferSeen {
  /** The server's identifier (option 54), else the address the OFFER came from. */
  server: string;
  /** The address the OFFER came from (a relay, or the server). */
  from: string;
  /** The address offered to us (0.0.0.0 from a proxyDHCP or PXE-only server). */
  offered: string;
  router?: string;
  /** It answers PXE clients itself (PXEClient vendor class, a boot file or next server). */
  pxe: boolean;
  bootFile?: string;
}

export interface ProbeOptions {
  /** The interface to ask on (the socket is tied to it). */
  interface: string;
  /** Our hardware address (the interface's own, so the server's answer is for us). */
  mac: string;
  timeoutMs: number;
  /** Ports (tests use others): the client's 68, the servers' 67. */
  clientPort?: number;
  serverPort?: number;
}

/** Most OFFERs kept (a LAN that floods replies does not grow the list). */
const MAX_OFFERS = 16;

export interface ProbeResult {
  offers: DhcpOfferSeen[];
  /** Why the socket could not be tied to the interface (its DISCOVER may have left by another). */
  notTied: string | null;
}

/**
 * Broadcasts one DISCOVER and collects the OFFERs answering it until the timeout, or 1.5 s
 * after the first (servers that ping an address before offering it, as dnsmasq does, take
 * seconds: the timeout must allow for that).
 */
export async function probeDhcp(o: ProbeOptions): Promise<ProbeResult> {
  const socket = createSocket({ type: "udp4", reuseAddr: true });
  const xid = randomBytes(4).readUInt32BE(0);
  const offers: DhcpOfferSeen[] = [];
  let firstOffer: () => void = () => {};
  const answered = new Promise<void>((resolve) => (firstOffer = resolve));
  socket.on("message", (msg, rinfo) => {
    if (offers.length >= MAX_OFFERS) return;
    try {
      const p = decodePacket(msg);
      if (p.xid !== xid || messageType(p) !== MessageType.OFFER) return;
      const server = optIp(p, Opt.SERVER_ID) ?? rinfo.address;
      if (offers.some((x) => x.server === server && x.from === rinfo.address)) return;
      const bootFile = optString(p, Opt.BOOTFILE) ?? (p.file || undefined);
      offers.push({
        server,
        from: rinfo.address,
        offered: p.yiaddr,
        router: optIp(p, Opt.ROUTER),
        pxe: optString(p, Opt.VENDOR_CLASS)?.startsWith("PXEClient") === true || !!bootFile,
        bootFile,
      });
      firstOffer();
    } catch {
      // not DHCP: ignored
    }
  });
  try {
    await bindUdp(socket, o.clientPort ?? 68, "0.0.0.0");
    socket.setBroadcast(true);
    const notTied = bindToInterface(socket, o.interface);
    if (notTied) return { offers: [], notTied };
    const discover = encodePacket(
      clientRequest(
        xid,
        Buffer.concat([parseMac(o.mac), Buffer.alloc(10)]),
        new Map([
          [Opt.MESSAGE_TYPE, u8(MessageType.DISCOVER)],
          [Opt.PARAMETER_LIST, Buffer.from([Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS, Opt.SERVER_ID])],
        ]),
      ),
    );
    await new Promise<void>((resolve, reject) =>
      socket.send(discover, o.serverPort ?? 67, "255.255.255.255", (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    // Until the deadline, or shortly after the first offer (other servers answer about as fast).
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise((r) => (timer = setTimeout(r, o.timeoutMs))),
      answered.then(() => new Promise((r) => setTimeout(r, Math.min(1500, o.timeoutMs)))),
    ]);
    clearTimeout(timer);
    return { offers, notTied: null };
  } finally {
    socket.close();
  }
}
