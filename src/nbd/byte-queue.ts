// Incoming socket bytes as a queue the protocol reads exact lengths from. When more than
// `highWater` bytes wait unread, the socket is paused: a fast client is back-pressured by TCP
// instead of filling our memory.
import type { Socket } from "node:net";

export class ConnectionClosedError extends Error {
  readonly code = "ERR_CONNECTION_CLOSED";
}

export class ByteQueue {
  readonly #socket: Socket;
  readonly #highWater: number;
  #chunks: Buffer[] = [];
  #length = 0;
  #waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  #closed: Error | null = null;

  constructor(socket: Socket, highWater = 4 * 1024 * 1024) {
    this.#socket = socket;
    this.#highWater = highWater;
    socket.on("data", (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#length += chunk.length;
      if (this.#length > this.#highWater) socket.pause();
      this.#serve();
    });
    const close = (err?: Error): void => {
      this.#closed ??= new ConnectionClosedError(
        err ? `Connection failed: ${err.message}` : "The client closed the connection",
      );
      this.#serve();
    };
    socket.on("end", () => close());
    socket.on("close", () => close());
    socket.on("error", (err) => close(err));
  }

  get buffered(): number {
    return this.#length;
  }

  /** Resolves with exactly `n` bytes, or rejects when the connection ends first. */
  read(n: number): Promise<Buffer> {
    if (this.#waiter) throw new Error("ByteQueue.read called while another read is pending");
    return new Promise((resolve, reject) => {
      this.#waiter = { n, resolve, reject };
      this.#serve();
    });
  }

  /** Exactly `n` bytes if they are here already (and no read waits), else null. */
  takeNow(n: number): Buffer | null {
    if (this.#waiter || this.#length < n) return null;
    const data = this.#take(n);
    if (this.#length <= this.#highWater && this.#socket.isPaused()) this.#socket.resume();
    return data;
  }

  /** Consumes and drops `n` bytes without holding more than one socket chunk at a time. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      const step = Math.min(left, 1 << 20);
      await this.read(step);
      left -= step;
    }
  }

  #take(n: number): Buffer {
    let out: Buffer;
    const first = this.#chunks[0];
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let pos = 0;
      while (pos < n) {
        const c = this.#chunks[0];
        const take = Math.min(c.length, n - pos);
        c.copy(out, pos, 0, take);
        pos += take;
        if (take === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(take);
      }
    }
    this.#length -= n;
    return out;
  }

  #serve(): void {
    const w = this.#waiter;
    if (!w) return;
    if (this.#length >= w.n) {
      this.#waiter = null;
      w.resolve(this.takeNow(w.n)!);
    } else if (this.#closed) {
      this.#waiter = null;
      w.reject(this.#closed);
    } else if (this.#socket.isPaused()) {
      this.#socket.resume();
    }
  }
}
