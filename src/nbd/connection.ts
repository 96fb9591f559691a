// One NBD connection from accept to close: the handshake (fixed newstyle, within the handshake
// timeout), option haggling, then the transmission phase on the export chosen. Protocol errors
// close this connection only; the server learns what it needs through its ConnectionHost.
import type { Socket } from "node:net";
import type { Logger } from "../lib/log.ts";
import { ByteQueue, ConnectionClosedError } from "./byte-queue.ts";
import type { ConnectionHost } from "./connection-host.ts";
import { Negotiation } from "./negotiation.ts";
import * as P from "./protocol.ts";
import { Transmission } from "./transmission.ts";

export class Connection {
  readonly id: number;
  readonly #host: ConnectionHost;
  readonly #socket: Socket;
  readonly #in: ByteQueue;
  readonly #log: Logger;
  #transmission: Transmission | null = null;

  constructor(host: ConnectionHost, socket: Socket, id: number) {
    this.#host = host;
    this.#socket = socket;
    this.id = id;
    this.#in = new ByteQueue(socket);
    this.#log = host.log.child({ conn: id });
  }

  async run(): Promise<void> {
    this.#log.debug({ remote: this.#socket.remoteAddress ?? "unix" }, "nbd connection");
    const deadline = setTimeout(() => {
      this.#host.stats.handshakeTimeouts++;
      this.#host.warnLimited("nbd handshake not finished in time; connection closed", {
        remote: this.#socket.remoteAddress,
        ms: this.#host.limits.handshakeTimeoutMs,
      });
      this.#socket.destroy();
    }, this.#host.limits.handshakeTimeoutMs);
    deadline.unref();
    this.#socket.write(P.encodeHandshake());
    try {
      const clientFlags = (await this.#in.read(4)).readUInt32BE(0);
      if ((clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE) === 0) {
        throw new P.NbdProtocolError(
          `client flags 0x${clientFlags.toString(16)} lack FIXED_NEWSTYLE (old clients are not supported)`,
        );
      }
      if ((clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
        throw new P.NbdProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
      }
      const noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
      const negotiation = new Negotiation(this.#host, {
        socket: this.#socket,
        input: this.#in,
        noZeroes,
      });
      const chosen = await negotiation.run();
      clearTimeout(deadline);
      if (!chosen) return;
      this.#log.info(
        { export: this.#host.logName(chosen.name), structured: negotiation.structured },
        "nbd client attached",
      );
      const transmission = new Transmission(
        this.#host,
        { socket: this.#socket, input: this.#in, log: this.#log },
        negotiation,
      );
      this.#transmission = transmission;
      this.#host.attached(chosen.name);
      try {
        await transmission.run(chosen);
      } finally {
        await transmission.settled();
        this.#host.detached(chosen.name, this.#socket.remoteAddress);
      }
    } catch (err) {
      if (err instanceof ConnectionClosedError) {
        this.#log.debug("nbd client went away");
      } else if (err instanceof P.NbdProtocolError) {
        // Garbage from the client: this connection only is closed.
        this.#host.warnLimited(
          "nbd protocol error; closing the connection",
          { err: err.message },
          `protocol ${this.#socket.remoteAddress}`,
        );
      } else throw err;
    } finally {
      clearTimeout(deadline);
      await this.#transmission?.settled();
      this.#socket.end();
    }
  }
}
