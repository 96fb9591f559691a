// Load generator for the boot-server benchmark, run inside a client network namespace:
//   dhcp SERVER COUNT CONCURRENCY       DISCOVER→OFFER→REQUEST→ACK transactions, bounded
//   tftp SERVER COUNT FILE [BASE]       COUNT concurrent TFTP reads of FILE (blksize 1468)
//   boot SERVER CLIENTS HTTP_BASE [BASE] CLIENTS simulated machines booting at once: DHCP,
//                                       TFTP first stage, /boot.ipxe, the plan, kernel, initrd
//   (BASE: the first of COUNT source addresses, one per simulated machine)
// Prints one JSON line with the results. Every wait has a timeout; the run stops by itself.
import { createSocket } from "node:dgram";
import type { Socket } from "node:dgram";
import {
  clientRequest,
  decodePacket,
  encodePacket,
  ipToBuffer,
  ipToNumber,
  MessageType,
  numberToIp,
  messageType,
  Opt,
  optIp,
  optString,
} from "../src/dhcp/packet.ts";
import type { DhcpPacket } from "../src/dhcp/packet.ts";
import { decodeTftp, encodeTftp, Op } from "../src/tftp/protocol.ts";
import { Agent, fetch } from "undici";

/**
 * The source address of simulated machine `i`: SOURCE_BASE + i (the benchmark adds them to the
 * client's interface), so each machine is a host of its own to the server, as a lab's are (a
 * server caps what one address may open); undefined without a base: every one from the host.
 */
function sourceOf(base: string | undefined, i: number): string | undefined {
  return base ? numberToIp(ipToNumber(base) + i) : undefined;
}

const TIMEOUT_MS = 3000;
/** Waits before each resend of a DHCP request, then TIMEOUT_MS for the last (18 s in all). */
const RETRIES_MS = [1000, 2000, 4000, 8000];

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

  /** Sends `p` until `want` comes back: PXE's schedule (RFC 4578's 4, 8, 16, 32 s), cut to 1-8 s. */
  #ask(p: DhcpPacket, want: number): Promise<DhcpPacket> {
    return new Promise((resolve, reject) => {
      let tries = 0;
      let timer: NodeJS.Timeout;
      const send = (): void => {
        this.#socket.send(
          encodePacket(p),
          67,
          this.#server === "broadcast" ? "255.255.255.255" : this.#server,
        );
        if (tries++ >= RETRIES_MS.length) {
          timer = setTimeout(() => {
            this.#waiting.delete(p.xid);
            reject(new Error(`no ${want === MessageType.OFFER ? "OFFER" : "ACK"}`));
          }, TIMEOUT_MS);
        } else timer = setTimeout(send, RETRIES_MS[tries - 1]);
      };
      this.#waiting.set(p.xid, (reply) => {
        if (messageType(reply) !== want) return;
        clearTimeout(timer);
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
      return clientRequest(xid, chaddr, options);
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
function tftpGet(server: string, file: string, blksize: number, source?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket("udp4");
    if (source) s.bind(0, source);
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

/** GETs `url` and counts its body as it streams (a thousand machines' kernels held at once would
 * be the generator's limit, not the server's). */
async function get(url: string, dispatcher?: Agent): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(300_000), dispatcher });
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
  let n = 0;
  for await (const chunk of res.body ?? []) n += (chunk as Uint8Array).byteLength;
  return n;
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

async function bootLoad(
  server: string,
  clients: number,
  httpBase: string,
  sourceBase?: string,
): Promise<void> {
  const pool = await DhcpClientPool.open(server);
  const failures: string[] = [];
  let bytes = 0;
  const started = performance.now();
  const times: number[] = [];
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const t0 = performance.now();
      const source = sourceOf(sourceBase, i);
      const agent = source ? new Agent({ connect: { localAddress: source } }) : undefined;
      try {
        await pool.lease(100_000 + i, true);
        const tftpServer = server === "broadcast" ? "10.99.0.1" : server;
        const firstStage = await tftpGet(tftpServer, "undionly.kpxe", 1468, source);
        bytes += firstStage; // (not `bytes += await`: that reads bytes before waiting)
        const mac = `02-00-00-01-${((i >> 8) & 255).toString(16).padStart(2, "0")}-${(i & 255).toString(16).padStart(2, "0")}`;
        await get(`${httpBase}/boot.ipxe`, agent);
        const plan = await (
          await fetch(`${httpBase}/ipxe/boot?mac=${mac}&platform=pcbios&buildarch=i386`, {
            dispatcher: agent,
          })
        ).text();
        const urls = [...plan.matchAll(/(?:kernel|initrd --name \S+) (\S+)/g)].map((m) => m[1]);
        if (urls.length < 2)
          throw new Error(`plan without kernel and initrd: ${plan.slice(0, 200)}`);
        for (const u of urls) {
          const n = await get(u, agent);
          bytes += n;
        }
        times.push(performance.now() - t0);
      } catch (err) {
        failures.push((err as Error).message);
      } finally {
        await agent?.close();
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
      p99: (times[Math.floor(times.length * 0.99)] ?? times.at(-1) ?? 0) / 1000,
      max: (times.at(-1) ?? 0) / 1000,
    }),
  );
}

/** COUNT concurrent TFTP reads of one file (a lab powering on at once). */
async function tftpLoad(
  server: string,
  count: number,
  file: string,
  sourceBase?: string,
): Promise<void> {
  const started = performance.now();
  const results = await Promise.allSettled(
    Array.from({ length: count }, (_, i) => tftpGet(server, file, 1468, sourceOf(sourceBase, i))),
  );
  const seconds = (performance.now() - started) / 1000;
  const ok = results.filter((r) => r.status === "fulfilled");
  const bytes = ok.reduce((sum, r) => sum + r.value, 0);
  const failures = count - ok.length;
  console.log(JSON.stringify({ count, failures, seconds, bytes }));
}

const [mode, server, a, b, c] = process.argv.slice(2);
if (mode === "dhcp") await dhcpLoad(server, Number(a), Number(b));
else if (mode === "boot") await bootLoad(server, Number(a), b, c);
else if (mode === "tftp") await tftpLoad(server, Number(a), b, c);
else
  throw new Error(
    "usage: boot-load.ts dhcp SERVER COUNT CONCURRENCY | tftp SERVER COUNT FILE [SOURCE_BASE] | boot SERVER CLIENTS HTTP_BASE [SOURCE_BASE]",
  );
