// Load generator for the boot-server benchmark, run inside a client network namespace:
//   dhcp SERVER COUNT CONCURRENCY       DISCOVER→OFFER→REQUEST→ACK transactions, bounded
//   tftp SERVER COUNT FILE              COUNT concurrent TFTP reads of FILE (blksize 1468)
//   boot SERVER CLIENTS HTTP_BASE       CLIENTS simulated machines booting at once: DHCP,
//                                       TFTP first stage, /boot.ipxe, the plan, kernel, initrd
// Prints one JSON line with the results. Every wait has a timeout; the run stops by itself.
import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";
import {
  BOOTREQUEST,
  BROADCAST_FLAG,
  decodePacket,
  encodePacket,
  ipToBuffer,
  MessageType,
  messageType,
  Opt,
  optIp,
  optString,
} from "../src/dhcp/packet.ts";
import type { DhcpPacket } from "../src/dhcp/packet.ts";
import { decodeTftp, encodeTftp, Op } from "../src/tftp/protocol.ts";

const TIMEOUT_MS = 3000;

class DhcpClientPool {
  readonly #socket: Socket;
  readonly #waiting = new Map<number, (p: DhcpPacket) => void>();
  readonly #server: string;

  private constructor(socket: Socket, server: string) {
    this.#socket = socket;
    this.#server = server;
    socket.on("message", (msg) => {
      try {
        const p = decodePacket(msg);
        this.#waiting.get(p.xid)?.(p);
      } catch {
        // not ours
      }
    });
  }

  static async open(server: string): Promise<DhcpClientPool> {
    const socket = createSocket({ type: "udp4", reuseAddr: true });
    await new Promise<void>((r) => socket.bind(68, "0.0.0.0", () => r()));
    socket.setBroadcast(true);
    socket.on("error", (err) => {
      console.error(`DHCP socket: ${err.message}`);
      process.exit(1);
    });
    return new DhcpClientPool(socket, server);
  }

  #ask(p: DhcpPacket, want: number): Promise<DhcpPacket> {
    return new Promise((resolve, reject) => {
      let tries = 0;
      const send = (): void => {
        this.#socket.send(
          encodePacket(p),
          67,
          this.#server === "broadcast" ? "255.255.255.255" : this.#server,
        );
      };
      const timer = setInterval(() => {
        if (++tries > 2) {
          clearInterval(timer);
          this.#waiting.delete(p.xid);
          reject(new Error(`no ${want === MessageType.OFFER ? "OFFER" : "ACK"}`));
        } else send();
      }, TIMEOUT_MS);
      this.#waiting.set(p.xid, (reply) => {
        if (messageType(reply) !== want) return;
        clearInterval(timer);
        this.#waiting.delete(p.xid);
        resolve(reply);
      });
      send();
    });
  }

  /** One full transaction for a made-up MAC; resolves with the address. */
  async lease(n: number, pxe: boolean): Promise<string> {
    const chaddr = Buffer.alloc(16);
    chaddr.writeUInt32BE(0x02000000 + ((n >>> 16) & 0xff), 0);
    chaddr.writeUInt16BE(n & 0xffff, 4);
    const base = (type: number, xid: number): DhcpPacket => {
      const options = new Map<number, Buffer>([[Opt.MESSAGE_TYPE, Buffer.from([type])]]);
      if (pxe) {
        options.set(Opt.VENDOR_CLASS, Buffer.from("PXEClient:Arch:00000:UNDI:002001"));
        options.set(Opt.CLIENT_ARCH, Buffer.from([0, 0]));
      }
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
    };
    const xid = (Math.random() * 0xffffffff) >>> 0;
    const offer = await this.#ask(base(MessageType.DISCOVER, xid), MessageType.OFFER);
    const req = base(MessageType.REQUEST, xid);
    req.options.set(Opt.REQUESTED_IP, ipToBuffer(offer.yiaddr));
    req.options.set(Opt.SERVER_ID, ipToBuffer(optIp(offer, Opt.SERVER_ID) ?? "0.0.0.0"));
    const ack = await this.#ask(req, MessageType.ACK);
    this.lastBootFile = optString(ack, Opt.BOOTFILE) ?? ack.file;
    return ack.yiaddr;
  }

  lastBootFile = "";

  close(): void {
    this.#socket.close();
  }
}

/**
 * A minimal TFTP read with blksize, lockstep, retransmitting its last packet (the request or
 * the last ACK) after a second of silence, up to 6 times, like PXE ROMs; resolves with the bytes.
 */
function tftpGet(server: string, file: string, blksize: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket("udp4");
    let bytes = 0;
    let expected = 1;
    let peerPort = 69;
    let last = encodeTftp({
      op: Op.RRQ,
      filename: file,
      mode: "octet",
      options: new Map([["blksize", String(blksize)]]),
    });
    let silentTries = 0;
    let progressed = true;
    const send = (buf: Buffer): void => {
      last = buf;
      progressed = true;
      s.send(buf, peerPort, server);
    };
    const retry = setInterval(() => {
      if (progressed) {
        progressed = false;
        silentTries = 0;
        return;
      }
      if (++silentTries > 6) return done(new Error(`TFTP ${file} timed out`));
      s.send(last, peerPort, server);
    }, 1000);
    const done = (err?: Error): void => {
      clearInterval(retry);
      s.close();
      if (err) reject(err);
      else resolve(bytes);
    };
    s.on("message", (msg, rinfo) => {
      peerPort = rinfo.port;
      const p = decodeTftp(msg);
      if (p.op === Op.OACK) return send(encodeTftp({ op: Op.ACK, block: 0 }));
      if (p.op === Op.ERROR) return done(new Error(`TFTP error ${p.message}`));
      if (p.op !== Op.DATA) return;
      if (p.block === (expected & 0xffff)) {
        bytes += p.data.length;
        expected++;
      }
      send(encodeTftp({ op: Op.ACK, block: p.block }));
      if (p.data.length < blksize && p.block === ((expected - 1) & 0xffff)) done();
    });
    send(last);
  });
}

async function get(url: string): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(120_000) });
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
  return (await res.arrayBuffer()).byteLength;
}

async function dhcpLoad(server: string, count: number, concurrency: number): Promise<void> {
  const pool = await DhcpClientPool.open(server);
  let next = 0;
  let failures = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const n = next++;
        await pool.lease(n + 1, false).catch(() => failures++);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  pool.close();
  console.log(
    JSON.stringify({ count, failures, seconds, perSecond: (count - failures) / seconds }),
  );
}

async function bootLoad(server: string, clients: number, httpBase: string): Promise<void> {
  const pool = await DhcpClientPool.open(server);
  const failures: string[] = [];
  let bytes = 0;
  const started = performance.now();
  const times: number[] = [];
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const t0 = performance.now();
      try {
        await pool.lease(100_000 + i, true);
        const tftpServer = server === "broadcast" ? "10.99.0.1" : server;
        const firstStage = await tftpGet(tftpServer, "undionly.kpxe", 1468);
        bytes += firstStage; // (not `bytes += await`: that reads bytes before waiting)
        const mac = `02-00-00-01-${((i >> 8) & 255).toString(16).padStart(2, "0")}-${(i & 255).toString(16).padStart(2, "0")}`;
        await get(`${httpBase}/boot.ipxe`);
        const plan = await (
          await fetch(`${httpBase}/ipxe/boot?mac=${mac}&platform=pcbios&buildarch=i386`)
        ).text();
        const urls = [...plan.matchAll(/(?:kernel|initrd --name \S+) (\S+)/g)].map((m) => m[1]);
        if (urls.length < 2)
          throw new Error(`plan without kernel and initrd: ${plan.slice(0, 200)}`);
        for (const u of urls) {
          const n = await get(u);
          bytes += n;
        }
        times.push(performance.now() - t0);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }),
  );
  pool.close();
  const seconds = (performance.now() - started) / 1000;
  times.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      clients,
      failures: failures.length,
      failureSamples: [...new Set(failures)].slice(0, 5),
      seconds,
      bytes,
      p50: (times[Math.floor(times.length / 2)] ?? 0) / 1000,
      max: (times.at(-1) ?? 0) / 1000,
    }),
  );
}

/** COUNT concurrent TFTP reads of one file (a lab powering on at once). */
async function tftpLoad(server: string, count: number, file: string): Promise<void> {
  const started = performance.now();
  const results = await Promise.allSettled(
    Array.from({ length: count }, () => tftpGet(server, file, 1468)),
  );
  const seconds = (performance.now() - started) / 1000;
  const ok = results.filter((r) => r.status === "fulfilled");
  const bytes = ok.reduce((sum, r) => sum + r.value, 0);
  const failures = count - ok.length;
  console.log(JSON.stringify({ count, failures, seconds, bytes }));
}

const [mode, server, a, b] = process.argv.slice(2);
if (mode === "dhcp") await dhcpLoad(server, Number(a), Number(b));
else if (mode === "boot") await bootLoad(server, Number(a), b);
else if (mode === "tftp") await tftpLoad(server, Number(a), b);
else
  throw new Error(
    "usage: boot-load.ts dhcp SERVER COUNT CONCURRENCY | tftp SERVER COUNT FILE | boot SERVER CLIENTS HTTP_BASE",
  );
