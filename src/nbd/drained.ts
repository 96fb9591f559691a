// Waiting for a socket's unsent bytes to fall below a bound: a client that sends but never
// reads its replies is not buffered for.
import type { Socket } from "node:net";

/** Resolves once unsent bytes are below `limit` (or the connection is gone). */
export async function drained(socket: Socket, limit: number): Promise<void> {
  while (socket.writableLength > limit && !socket.destroyed) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        socket.off("drain", done);
        socket.off("close", done);
        resolve();
      };
      socket.on("drain", done);
      socket.on("close", done);
    });
  }
}
