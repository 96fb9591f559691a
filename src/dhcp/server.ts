// The DHCP server: `full` hands out addresses from a pool (and boot information), `proxy` sits
// beside an existing DHCP server and only answers network-boot firmware with where to boot from
// (on port 67 and on the PXE port 4011), never with an address.
// Replies are built in reply.ts (pure); this file receives, decides and sends.
import { createSocket } from "node:dgram";
import type { RemoteInfo, Socket } from "node:dgram";
import { networkInterfaces } from "node:os";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { RateLimitedLog } from "../lib/rate-limited-log.ts";
import { bindToInterface, bindUdp } from "../net/interface.ts";
import { classifyFirmware } from "./firmware.ts";
import type { LeaseDb } from "./leases.ts";
import type { BootAnswer, DhcpClient, DhcpEvent, DhcpServerOptions } from "./options.ts";
import {
  BOOTREQUEST,
  BROADCAST_FLAG,
  decodePacket,
  DhcpDecodeError,
  encodePacket,
  ips,
  macOf,
  MessageType,
  messageType,
  messageTypeName,
  Opt,
  optIp,
  optString,
  str,
  u32,
} from "./packet.ts";
import type { DhcpPacket } from "./packet.ts";
import { addBoot, replyDestination, replyTo } from "./reply.ts";
import { inSubnets, parseSubnet, subnetOf } from "./subnet.ts";
import type { Subnet } from "./subnet.ts";

// (Kept importable from here, where they were first defined.)
export type { BootAnswer, DhcpClient, DhcpEvent, DhcpMode, DhcpServerOptions } from "./options.ts";
export { parseSubnet } from "./subnet.ts";

/** One line per this many milliseconds at most for requests dropped in a flood. */
export const DHCP_DROP_LOG_INTERVAL_MS = 10_000;

/** The receive buffer asked for the server's sockets (a burst of ~2,000 requests). */
const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

export class DhcpServer {
  readonly #o: DhcpServerOptions;
  readonly #log: Logger;
  readonly #sockets: Socket[] = [];
  #stats = { received: 0, dropped: 0, replies: 0 };
  /** Proxy mode: where relayed requests may come from (computed at start). */
  #relaySubnets: Subnet[] = [];
  readonly #malformed = new RateLimitedLog();
  readonly #configuredRelays: Subnet[];
  #lastDropLog = -Infinity;
  #dropsNotLogged = 0;

  constructor(options: DhcpServerOptions) {
    if (options.mode === "full" && !options.leases) throw new Error("full DHCP needs a pool");
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
    this.#configuredRelays = (options.relaySubnets ?? []).map(parseSubnet);
  }

  get stats(): { received: number; dropped: number; replies: number } {
    return { ...this.#stats };
  }

  async start(): Promise<void> {
    this.#relaySubnets = this.#servedSubnets();
    await this.#open(this.#o.port ?? 67, "dhcp");
    await this.#open(this.#o.proxyPort ?? 4011, "pxe");
  }

  async #open(port: number, kind: "dhcp" | "pxe"): Promise<void> {
    const socket = createSocket({ type: "udp4", reuseAddr: true });
    socket.on("message", (msg, rinfo) => {
      this.#handle(msg, rinfo, kind, socket).catch((err: unknown) => {
        this.#log.error({ err, from: rinfo.address }, "dhcp request failed");
      });
    });
    socket.on("error", (err) => this.#log.error({ err, port }, "dhcp socket error"));
    await bindUdp(socket, port, this.#o.bindAddress ?? "0.0.0.0");
    socket.setBroadcast(true);
    // A lab powering on sends its DISCOVERs in one burst: room for them (the kernel caps it
    // at net.core.rmem_max).
    socket.setRecvBufferSize(RECEIVE_BUFFER_BYTES);
    const notTied = this.#o.interface ? bindToInterface(socket, this.#o.interface) : null;
    if (notTied) {
      this.#log.warn(
        { interface: this.#o.interface, reason: notTied },
        "cannot restrict DHCP to one interface on this platform: requests on every interface are answered",
      );
    }
    this.#sockets.push(socket);
  }

  /** The subnets of our interface (or of serverAddress/netmask), plus relaySubnets. */
  #servedSubnets(): Subnet[] {
    const o = this.#o;
    const own = o.interface
      ? (networkInterfaces()[o.interface] ?? [])
          .filter((i) => i.family === "IPv4")
          .map((i) => subnetOf(i.address, i.netmask))
      : [];
    if (own.length === 0) own.push(subnetOf(o.serverAddress, o.netmask ?? "255.255.255.0"));
    return [...own, ...this.#configuredRelays];
  }

  #relayServed(giaddr: string): boolean {
    return inSubnets(giaddr, this.#relaySubnets);
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.#sockets.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
    );
  }

  async #handle(msg: Buffer, rinfo: RemoteInfo, kind: "dhcp" | "pxe", socket: Socket) {
    this.#stats.received++;
    let req: DhcpPacket;
    try {
      req = decodePacket(msg);
    } catch (err) {
      if (!(err instanceof DhcpDecodeError)) throw err;
      this.#stats.dropped++;
      // Source addresses are spoofable: a flood of bad packets is one line per interval.
      this.#malformed.hit("malformed", (suppressed) =>
        this.#log.warn(
          { from: `${rinfo.address}:${rinfo.port}`, reason: err.message, suppressed },
          "malformed DHCP packet dropped",
        ),
      );
      return;
    }
    const type = messageType(req);
    if (req.op !== BOOTREQUEST || req.htype !== 1 || req.hlen !== 6 || type === undefined) {
      this.#stats.dropped++;
      this.#log.debug({ from: rinfo.address, op: req.op, type }, "not a DHCP request; ignored");
      return;
    }
    if (
      this.#o.mode === "proxy" &&
      kind === "dhcp" &&
      req.giaddr !== "0.0.0.0" &&
      !this.#relayServed(req.giaddr)
    ) {
      this.#stats.dropped++;
      this.#logDrop(req.giaddr, rinfo);
      return;
    }
    const firmware = classifyFirmware(req);
    const client: DhcpClient = {
      mac: macOf(req),
      firmware,
      hostname: optString(req, Opt.HOSTNAME),
      ip: req.ciaddr !== "0.0.0.0" ? req.ciaddr : "",
      relay: req.giaddr !== "0.0.0.0" ? req.giaddr : undefined,
    };
    const reply =
      kind === "pxe"
        ? this.#pxeRequest(req, type, client)
        : this.#o.mode === "proxy"
          ? this.#proxyRequest(req, type, client)
          : await this.#fullRequest(req, type, client);
    if (!reply) return;
    const to =
      kind === "pxe"
        ? { address: rinfo.address, port: rinfo.port }
        : replyDestination(req, reply, {
            serverPort: this.#o.port ?? 67,
            clientPort: this.#o.clientPort ?? 68,
          });
    await new Promise<void>((resolve) => {
      socket.send(encodePacket(reply), to.port, to.address, (err) => {
        if (err) this.#log.warn({ err, to }, "cannot send DHCP reply");
        resolve();
      });
    });
    this.#stats.replies++;
  }

  #logDrop(giaddr: string, rinfo: RemoteInfo): void {
    const now = performance.now();
    if (now - this.#lastDropLog < DHCP_DROP_LOG_INTERVAL_MS) {
      this.#dropsNotLogged++;
      return;
    }
    this.#log.warn(
      { giaddr, from: rinfo.address, suppressed: this.#dropsNotLogged },
      "relayed DHCP request from a relay on no subnet of ours dropped",
    );
    this.#lastDropLog = now;
    this.#dropsNotLogged = 0;
  }

  #event(stage: string, client: DhcpClient, extra: Partial<DhcpEvent> = {}): void {
    const event: DhcpEvent = {
      stage,
      mac: client.mac,
      ip: client.ip || undefined,
      firmware: client.firmware,
      hostname: client.hostname,
      ...extra,
    };
    this.#log.info(
      {
        event: stage,
        mac: event.mac,
        ip: event.ip,
        arch: client.firmware.arch,
        ipxe: client.firmware.ipxe,
        file: event.file,
        detail: event.detail,
      },
      `dhcp ${stage}`,
    );
    this.#o.onEvent?.(event);
  }

  #bootFor(client: DhcpClient): BootAnswer | null {
    if (!client.firmware.netboot) return null;
    const answer = this.#o.boot(client);
    if (!answer) this.#event("dhcp-no-boot", client, { detail: "no boot file for this firmware" });
    return answer;
  }

  #reply(req: DhcpPacket, type: number, yiaddr: string): DhcpPacket {
    return replyTo(req, { type, yiaddr, serverAddress: this.#o.serverAddress });
  }

  #addBoot(reply: DhcpPacket, client: DhcpClient, boot: BootAnswer): void {
    addBoot(reply, boot, { client, serverAddress: this.#o.serverAddress });
  }

  #proxyRequest(req: DhcpPacket, type: number, client: DhcpClient): DhcpPacket | null {
    // Only DISCOVERs from boot firmware; REQUESTs on 67 belong to the real DHCP server.
    if (type !== MessageType.DISCOVER || !client.firmware.netboot) return null;
    const boot = this.#bootFor(client);
    if (!boot) return null;
    const reply = this.#reply(req, MessageType.OFFER, "0.0.0.0");
    this.#addBoot(reply, client, boot);
    this.#event("proxy-offer", client, { file: boot.file });
    return reply;
  }

  /** Port 4011: PXE clients ask the boot server directly (after a proxy offer). */
  #pxeRequest(req: DhcpPacket, type: number, client: DhcpClient): DhcpPacket | null {
    if (type !== MessageType.REQUEST && type !== MessageType.INFORM) return null;
    const boot = this.#bootFor(client);
    if (!boot) return null;
    const reply = this.#reply(req, MessageType.ACK, "0.0.0.0");
    this.#addBoot(reply, client, boot);
    this.#event("pxe-ack", client, { file: boot.file });
    return reply;
  }

  #addNetwork(reply: DhcpPacket, client: DhcpClient, withLease: boolean): void {
    const o = this.#o;
    if (o.netmask) reply.options.set(Opt.SUBNET_MASK, ips([o.netmask]));
    if (o.router?.length) reply.options.set(Opt.ROUTER, ips(o.router));
    if (o.dns?.length) reply.options.set(Opt.DNS, ips(o.dns));
    if (o.domain) reply.options.set(Opt.DOMAIN_NAME, str(o.domain));
    const name = o.leases?.reservation(client.mac)?.hostname ?? o.hostname?.(client);
    if (name) reply.options.set(Opt.HOSTNAME, str(name));
    if (withLease) {
      const seconds = o.leaseSeconds ?? 3600;
      reply.options.set(Opt.LEASE_TIME, u32(seconds));
      reply.options.set(Opt.RENEWAL_TIME, u32(Math.floor(seconds / 2)));
      reply.options.set(Opt.REBINDING_TIME, u32(Math.floor((seconds * 7) / 8)));
    }
    const rootPath = o.rootPath?.(client);
    if (rootPath) reply.options.set(Opt.ROOT_PATH, str(rootPath));
    const boot = this.#bootFor(client);
    if (boot) this.#addBoot(reply, client, boot);
  }

  async #fullRequest(
    req: DhcpPacket,
    type: number,
    client: DhcpClient,
  ): Promise<DhcpPacket | null> {
    const leases = this.#o.leases as LeaseDb;
    if (client.relay && !leases.inSubnet(client.relay)) {
      this.#event("dhcp-ignored", client, { detail: `relay ${client.relay} is not on our subnet` });
      return null;
    }
    switch (type) {
      case MessageType.DISCOVER: {
        const ip = leases.offer(client.mac, optIp(req, Opt.REQUESTED_IP));
        if (!ip) {
          this.#event("dhcp-pool-exhausted", client, { detail: "no free address in the range" });
          return null;
        }
        client.ip = ip;
        const reply = this.#reply(req, MessageType.OFFER, ip);
        this.#addNetwork(reply, client, true);
        this.#event("dhcp-offer", client, { file: reply.options.get(Opt.BOOTFILE)?.toString() });
        return reply;
      }
      case MessageType.REQUEST: {
        const serverId = optIp(req, Opt.SERVER_ID);
        if (serverId && serverId !== this.#o.serverAddress) return null; // chose another server
        const wanted = optIp(req, Opt.REQUESTED_IP) ?? (client.ip || undefined);
        const lease = wanted ? await leases.commit(client.mac, wanted, client.hostname) : null;
        if (!lease) {
          this.#event("dhcp-nak", client, {
            ip: wanted,
            detail: "address not available to this client",
          });
          const nak = this.#reply(req, MessageType.NAK, "0.0.0.0");
          nak.options.set(Opt.MESSAGE, str("requested address is not available"));
          nak.flags |= req.giaddr !== "0.0.0.0" ? BROADCAST_FLAG : 0;
          return nak;
        }
        client.ip = lease.ip;
        const reply = this.#reply(req, MessageType.ACK, lease.ip);
        this.#addNetwork(reply, client, true);
        this.#event("dhcp-ack", client, { file: reply.options.get(Opt.BOOTFILE)?.toString() });
        return reply;
      }
      case MessageType.DECLINE: {
        const ip = optIp(req, Opt.REQUESTED_IP);
        if (ip) await leases.decline(client.mac, ip);
        this.#event("dhcp-decline", client, { ip });
        return null;
      }
      case MessageType.RELEASE:
        await leases.release(client.mac, req.ciaddr);
        this.#event("dhcp-release", client);
        return null;
      case MessageType.INFORM: {
        const reply = this.#reply(req, MessageType.ACK, "0.0.0.0");
        reply.options.delete(Opt.LEASE_TIME);
        this.#addNetwork(reply, client, false);
        this.#event("dhcp-inform", client);
        return reply;
      }
      default:
        this.#log.debug({ type: messageTypeName(type), mac: client.mac }, "DHCP message ignored");
        return null;
    }
  }
}
