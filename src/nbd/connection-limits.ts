// Open connections of an NBD server, in all and per remote address: a connection past either
// cap is refused at accept (before a byte is read), so one host cannot hold every slot.
import type { Socket } from "node:net";

/** Why a connection is refused, with what the log line says about it. */
export interface Refusal {
  reason: string;
  detail: Record<string, unknown>;
}

/** "::ffff:10.0.0.1" and "10.0.0.1" are one client. */
export function addressKey(remote: string): string {
  return remote.startsWith("::ffff:") ? remote.slice(7) : remote;
}

export class ConnectionLimits {
  readonly #max: number;
  readonly #maxPerAddress: number;
  readonly #sockets = new Set<Socket>();
  /** Open connections per remote address (TCP). */
  readonly #perAddress = new Map<string, number>();

  constructor(limits: { maxConnections: number; maxConnectionsPerAddress: number }) {
    this.#max = limits.maxConnections;
    this.#maxPerAddress = limits.maxConnectionsPerAddress;
  }

  /** The connections open now. */
  get sockets(): ReadonlySet<Socket> {
    return this.#sockets;
  }

  /**
   * Counts `socket` until it closes, or says why it may not be opened (then it is not counted).
   */
  admit(socket: Socket): Refusal | null {
    const remote = socket.remoteAddress;
    const key = remote === undefined ? undefined : addressKey(remote);
    if (this.#sockets.size >= this.#max) {
      return { reason: "too many connections", detail: { limit: this.#max } };
    }
    if (key !== undefined && (this.#perAddress.get(key) ?? 0) >= this.#maxPerAddress) {
      return {
        reason: "too many connections from one address",
        detail: { remote: key, limit: this.#maxPerAddress },
      };
    }
    this.#sockets.add(socket);
    if (key !== undefined) this.#perAddress.set(key, (this.#perAddress.get(key) ?? 0) + 1);
    socket.once("close", () => {
      this.#sockets.delete(socket);
      if (key === undefined) return;
      const n = (this.#perAddress.get(key) ?? 1) - 1;
      if (n > 0) this.#perAddress.set(key, n);
      else this.#perAddress.delete(key);
    });
    return null;
  }
}
