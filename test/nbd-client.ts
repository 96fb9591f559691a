// A minimal NBD client for tests that need precise control over timing (which writes were
// acknowledged before a FLUSH) and for raw protocol abuse. Simple replies only.
import { connect } from "node:net";
import type { Socket } from "node:net";
import * as P from "../src/nbd/protocol.ts";

export class TestNbdClient {
  readonly socket: Socket;
  size = 0;
  flags = 0;
  #buf = Buffer.alloc(0);
  #want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  #closed: Error | null = null;
  #next = 1n;
  #pending = new Map<
    bigint,
    {
      resolve: (r: { error: number; data: Buffer }) => void;
      reject: (e: Error) => void;
      readLength: number;
    }
  >();

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#pump();
    });
    const fail = (): void => {
      this.#closed ??= new Error("connection closed");
      this.#pump();
      for (const p of this.#pending.values()) p.reject(this.#closed);
      this.#pending.clear();
    };
    socket.on("close", fail);
    socket.on("error", fail);
  }

  #pump(): void {
    const w = this.#want;
    if (!w) return;
    if (this.#buf.length >= w.n) {
      this.#want = null;
      const out = this.#buf.subarray(0, w.n);
      this.#buf = this.#buf.subarray(w.n);
      w.resolve(out);
    } else if (this.#closed) {
      this.#want = null;
      w.reject(this.#closed);
    }
  }

  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#want = { n, resolve, reject };
      this.#pump();
    });
  }

  static connect(path: string, exportName = ""): Promise<TestNbdClient> {
    return TestNbdClient.#handshake(connect(path), exportName);
  }

  static connectTcp(port: number, exportName = ""): Promise<TestNbdClient> {
    return TestNbdClient.#handshake(connect(port, "127.0.0.1"), exportName);
  }

  /** A client left in the option phase (hello read, client flags sent), for option tests. */
  static async negotiating(socket: Socket): Promise<TestNbdClient> {
    await new Promise<void>((r, j) => socket.once("connect", r).once("error", j));
    const c = new TestNbdClient(socket);
    const hello = await c.read(18);
    if (hello.readBigUInt64BE(0) !== P.NBD_MAGIC) throw new Error("not an NBD server");
    socket.write(Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES]));
    return c;
  }

  static async #handshake(socket: Socket, exportName: string): Promise<TestNbdClient> {
    const c = await TestNbdClient.negotiating(socket);
    return c.go(exportName);
  }

  /** NBD_OPT_GO from the option phase; the client then serves requests (simple replies). */
  async go(exportName: string): Promise<TestNbdClient> {
    const name = Buffer.from(exportName);
    const data = Buffer.alloc(4 + name.length + 2);
    data.writeUInt32BE(name.length, 0);
    name.copy(data, 4);
    this.sendOption(P.NBD_OPT_GO, data);
    for (;;) {
      const { type, payload } = await this.readOptionReply();
      if (type === P.NBD_REP_ACK) break;
      if (type === P.NBD_REP_INFO && payload.readUInt16BE(0) === P.NBD_INFO_EXPORT) {
        this.size = Number(payload.readBigUInt64BE(2));
        this.flags = payload.readUInt16BE(10);
      } else if (type >= 2 ** 31) throw new Error(`NBD_OPT_GO failed: ${type - 2 ** 31}`);
    }
    this.#readReplies();
    return this;
  }

  sendOption(option: number, data: Buffer): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(P.NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  async readOptionReply(): Promise<{ option: number; type: number; payload: Buffer }> {
    const h = await this.read(20);
    const len = h.readUInt32BE(16);
    return {
      option: h.readUInt32BE(8),
      type: h.readUInt32BE(12),
      payload: len ? await this.read(len) : Buffer.alloc(0),
    };
  }

  #readReplies(): void {
    void (async () => {
      try {
        for (;;) {
          const h = await this.read(16);
          const handle = h.readBigUInt64BE(8);
          const p = this.#pending.get(handle);
          if (!p) throw new Error(`reply for unknown handle ${handle}`);
          this.#pending.delete(handle);
          const error = h.readUInt32BE(4);
          const data =
            error === 0 && p.readLength > 0 ? await this.read(p.readLength) : Buffer.alloc(0);
          p.resolve({ error, data });
        }
      } catch {
        // connection closed; pending requests were rejected
      }
    })();
  }

  request(
    type: number,
    offset: number,
    length: number,
    options: { data?: Uint8Array; flags?: number } = {},
  ): Promise<{ error: number; data: Buffer }> {
    const handle = this.#next++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(options.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    const done = new Promise<{ error: number; data: Buffer }>((resolve, reject) =>
      this.#pending.set(handle, {
        resolve,
        reject,
        readLength: type === P.NBD_CMD_READ ? length : 0,
      }),
    );
    this.socket.write(options.data ? Buffer.concat([h, options.data]) : h);
    return done;
  }

  write(offset: number, data: Uint8Array): Promise<{ error: number }> {
    return this.request(P.NBD_CMD_WRITE, offset, data.length, { data });
  }

  flush(): Promise<{ error: number }> {
    return this.request(P.NBD_CMD_FLUSH, 0, 0);
  }

  async readAt(offset: number, length: number): Promise<Buffer> {
    const r = await this.request(P.NBD_CMD_READ, offset, length);
    if (r.error) throw new Error(`read failed with errno ${r.error}`);
    return r.data;
  }

  close(): void {
    this.socket.destroy();
  }
}
