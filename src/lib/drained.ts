// Waiting for a stream's unsent bytes to fall below a bound: a client that asks but never reads
// what it is sent (NBD replies, an HTTP body) is not buffered for.
import type { Writable } from "node:stream";

/** Resolves once unsent bytes are below `limit` (or the connection is gone). */
export async function drained(stream: Writable, limit: number): Promise<void> {
  while (stream.writableLength > limit && !stream.destroyed) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        stream.off("drain", done);
        stream.off("close", done);
        resolve();
      };
      stream.on("drain", done);
      stream.on("close", done);
    });
  }
}
