// An emulated WAN link as a TCP proxy (this host's tc has no netem): every byte crosses a
// bottleneck of RATE bits/s per direction, shared by all connections like one access link, then
// waits DELAY ms (one way). Readers are paused while a direction has more than a router's
// buffer queued, so TCP flow control sees the bottleneck.
//
//   node test/wan-proxy.ts LISTEN_HOST:PORT TARGET_HOST:PORT [--delay-ms 20] [--rate-mbit 50]
//
// Prints "wan-proxy listening HOST:PORT" when ready. Also importable (startWanProxy).
import { connect, createServer } from "node:net";
import type { Server, Socket } from "node:net";
import type { ChildProcess } from "node:child_process";

export interface WanOptions {
  /** One-way delay; the round trip is twice this. */
  delayMs: number;
  /** Bottleneck rate per direction, in Mbit/s. */
  rateMbit: number;
  /** Bytes queued per direction before the sending socket is paused. */
  bufferBytes?: number;
}

/** One direction of the link: a FIFO bottleneck followed by a fixed delay. */
class Link {
  #busyUntil = 0;
  readonly #bytesPerMs: number;
  readonly #delayMs: number;

  constructor(o: WanOptions) {
    this.#bytesPerMs = (o.rateMbit * 1e6) / 8 / 1000;
    this.#delayMs = o.delayMs;
  }

  /** When a packet of `bytes` offered now arrives at the far end. */
  arrival(bytes: number): number {
    const now = performance.now();
    const depart = Math.max(now, this.#busyUntil) + bytes / this.#bytesPerMs;
    this.#busyUntil = depart;
    return depart + this.#delayMs;
  }
}

/** Delivers `from`'s data to `to` through `link`, in order, pausing `from` while queued high. */
function pipeThrough(from: Socket, to: Socket, link: Link, bufferBytes: number): void {
  const queue: { at: number; data: Buffer }[] = [];
  let queued = 0;
  let timer: NodeJS.Timeout | null = null;
  let ended = false;
  const pump = (): void => {
    timer = null;
    const now = performance.now();
    while (queue.length > 0 && queue[0].at <= now) {
      const { data } = queue.shift()!;
      queued -= data.length;
      if (!to.destroyed) to.write(data);
    }
    if (queued < bufferBytes / 2 && from.isPaused()) from.resume();
    if (queue.length > 0) timer = setTimeout(pump, Math.max(0, queue[0].at - now));
    else if (ended) to.end();
  };
  from.on("data", (data: Buffer) => {
    // Packets of at most 16 KiB keep the bottleneck's timing smooth for large reads.
    for (let i = 0; i < data.length; i += 16384) {
      const part = data.subarray(i, i + 16384);
      queue.push({ at: link.arrival(part.length), data: part });
      queued += part.length;
    }
    if (queued > bufferBytes) from.pause();
    timer ??= setTimeout(pump, Math.max(0, queue[0].at - performance.now()));
  });
  from.on("end", () => {
    ended = true;
    if (queue.length === 0) to.end();
  });
}

/** Starts the proxy; resolves once it listens. */
export function startWanProxy(
  listen: { host: string; port: number },
  target: { host: string; port: number },
  options: WanOptions,
): Promise<Server> {
  const up = new Link(options);
  const down = new Link(options);
  const buffer = options.bufferBytes ?? 256 * 1024;
  const server = createServer((client) => {
    const origin = connect(target.port, target.host);
    client.setNoDelay(true);
    origin.setNoDelay(true);
    const close = (): void => {
      client.destroy();
      origin.destroy();
    };
    // An orderly close (FIN) travels through the queue like data; only errors cut both at once.
    client.on("error", close);
    origin.on("error", close);
    // The TCP handshake costs one round trip too.
    client.pause();
    origin.once("connect", () => setTimeout(() => client.resume(), 2 * options.delayMs));
    pipeThrough(client, origin, up, buffer);
    pipeThrough(origin, client, down, buffer);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => resolve(server));
  });
}

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(":");
  const port = Number(s.slice(i + 1));
  if (i < 0 || !Number.isInteger(port)) throw new Error(`expected HOST:PORT, got ${s}`);
  return { host: s.slice(0, i), port };
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const flag = (name: string, fallback: number): number => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : fallback;
  };
  const listen = hostPort(args[0] ?? "");
  const target = hostPort(args[1] ?? "");
  const options = { delayMs: flag("--delay-ms", 20), rateMbit: flag("--rate-mbit", 50) };
  await startWanProxy(listen, target, options);
  process.stdout.write(`wan-proxy listening ${listen.host}:${listen.port}\n`);
}

/** The round trip and rate the Internet-boot tests and benchmark emulate. */
export const TEST_WAN: WanOptions = { delayMs: 20, rateMbit: 50 };

/**
 * Runs the proxy as its own process in namespace `ns` (via `spawn`, e.g. TestLan.spawn) so a
 * test's blocking calls never stall the link; resolves once it listens.
 */
export async function spawnWanProxy(
  spawnIn: (cmd: string, args: string[]) => ChildProcess,
  listen: string,
  target: string,
  options: WanOptions = TEST_WAN,
): Promise<ChildProcess> {
  const child = spawnIn(process.execPath, [
    new URL(import.meta.url).pathname,
    listen,
    target,
    "--delay-ms",
    String(options.delayMs),
    "--rate-mbit",
    String(options.rateMbit),
  ]);
  let out = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`wan-proxy did not start: ${out}`)), 10_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes("wan-proxy listening")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`wan-proxy exited with ${code}: ${out}`));
    });
  });
  return child;
}
