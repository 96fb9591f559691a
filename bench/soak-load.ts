// The soak's hostile LAN host: run inside its own network namespace with several addresses, it
// sends plan requests for distinct MACs, TFTP read requests it never acknowledges and NBD
// connections that stall or only list, all at once, while sampling the server's /metrics.
// Prints one JSON line with what it saw. Usage: soak-load.ts SERVER ADDR1,ADDR2,… PLANS RRQS NBD
import { createSocket } from "node:dgram";
import { request } from "node:http";
import { connect } from "node:net";

const [server, addressList, plansArg, rrqsArg, nbdArg] = process.argv.slice(2);
const addresses = addressList.split(",");
const PLANS = Number(plansArg);
const RRQS = Number(rrqsArg);
const NBD = Number(nbdArg);
const from = (i: number): string => addresses[i % addresses.length];

function get(path: string, localAddress: string): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = request({ host: server, port: 8080, path, localAddress, agent: false }, (res) => {
      res.resume();
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }),
      );
    });
    req.setTimeout(30_000, () => req.destroy());
    req.on("error", () => resolve({ status: 0, ms: performance.now() - started }));
    req.end();
  });
}

async function plans(): Promise<{ statuses: Record<number, number>; p50: number; p99: number }> {
  const statuses: Record<number, number> = {};
  const ms: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < PLANS) {
      const i = next++;
      const mac = `52-54-02-${((i >> 16) & 255).toString(16).padStart(2, "0")}-${((i >> 8) & 255).toString(16).padStart(2, "0")}-${(i & 255).toString(16).padStart(2, "0")}`;
      const r = await get(`/ipxe/boot?mac=${mac}&hostname=soak-${"x".repeat(2000)}`, from(i));
      statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      ms.push(r.ms);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  ms.sort((a, b) => a - b);
  return { statuses, p50: ms[Math.floor(ms.length / 2)], p99: ms[Math.floor(ms.length * 0.99)] };
}

/** RRQs from many ports on every address, never acknowledged; counts DATA and busy errors. */
async function rrqs(): Promise<{
  data: number;
  busy: number;
  other: number;
  errors: Record<string, number>;
}> {
  const seen = { data: 0, busy: 0, other: 0, errors: {} as Record<string, number> };
  // Eight client ports on every address.
  const sockets = addresses.flatMap((address) =>
    Array.from({ length: 8 }, () => {
      const s = createSocket("udp4");
      s.bind(0, address);
      return s;
    }),
  );
  const answered = new Set<string>();
  for (const s of sockets) {
    s.on("message", (msg, rinfo) => {
      const op = msg.readUInt16BE(0);
      if (op === 5) {
        const text = msg.subarray(4, msg.length - 1).toString();
        seen.errors[text] = (seen.errors[text] ?? 0) + 1;
        if (/busy/.test(text)) seen.busy++;
        else seen.other++;
        return;
      }
      const key = `${rinfo.port}`;
      if (answered.has(key)) return; // retransmissions of the same transfer
      answered.add(key);
      if (op === 3 || op === 6) seen.data++;
      else seen.other++;
    });
  }
  await Promise.all(sockets.map((s) => new Promise((r) => s.once("listening", r))));
  for (let i = 0; i < RRQS; i++) {
    const rrq = Buffer.from(`\0\x01file.bin\0octet\0blksize\x001468\0`, "latin1");
    sockets[i % sockets.length].send(rrq, 69, server);
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 3000));
  for (const s of sockets) s.close();
  return seen;
}

/** NBD connections: half never speak (held until the handshake deadline), half list and abort. */
async function nbd(): Promise<{ closedByServer: number; listed: number; errors: number }> {
  const seen = { closedByServer: 0, listed: 0, errors: 0 };
  const one = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const sock = connect({ host: server, port: 10809, localAddress: from(i) });
      let got = Buffer.alloc(0);
      const quiet = i % 2 === 0;
      sock.setTimeout(20_000, () => sock.destroy());
      sock.on("data", (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (!quiet && got.length >= 18 && got.length < 1000) {
          const flags = Buffer.from([0, 0, 0, 3]);
          const list = Buffer.alloc(16);
          list.writeBigUInt64BE(0x49484156454f5054n, 0);
          list.writeUInt32BE(3, 8); // NBD_OPT_LIST
          const abort = Buffer.from(list);
          abort.writeUInt32BE(2, 8); // NBD_OPT_ABORT
          sock.write(Buffer.concat([flags, list, abort]));
          got = Buffer.alloc(1000);
          seen.listed++;
        }
      });
      sock.on("error", () => seen.errors++);
      sock.on("close", () => {
        seen.closedByServer++;
        resolve();
      });
    });
  const all: Promise<void>[] = [];
  for (let i = 0; i < NBD; i++) {
    all.push(one(i));
    if (i % 20 === 19) await new Promise((r) => setTimeout(r, 20));
  }
  await Promise.all(all);
  return seen;
}

/** Samples the server's own health gauges until `done`. */
async function sample(done: {
  v: boolean;
}): Promise<{ maxStall: number; maxRss: number; maxFds: number }> {
  const out = { maxStall: 0, maxRss: 0, maxFds: 0 };
  while (!done.v) {
    const text = await fetch(`http://${server}:8080/metrics`).then(
      (r) => r.text(),
      () => "",
    );
    const value = (name: string): number =>
      Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
    out.maxStall = Math.max(out.maxStall, value("inetboot_event_loop_delay_max_seconds"));
    out.maxRss = Math.max(out.maxRss, value("process_resident_memory_bytes"));
    out.maxFds = Math.max(out.maxFds, value("process_open_fds"));
    await new Promise((r) => setTimeout(r, 2000));
  }
  return out;
}

const started = performance.now();
const done = { v: false };
const sampling = sample(done);
const [p, t, n] = await Promise.all([plans(), rrqs(), nbd()]);
const seconds = (performance.now() - started) / 1000;
await new Promise((r) => setTimeout(r, 2500)); // one more sample after the load
done.v = true;
const health = await sampling;
console.log(JSON.stringify({ seconds, plans: p, tftp: t, nbd: n, health }));
