// Small pieces the boot server's HTTP handlers share: errors with a status, plain replies,
// the client's address and MAC query parameters.
import type { IncomingMessage, ServerResponse } from "node:http";
import { formatMac, parseMac } from "../dhcp/packet.ts";

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** A whole reply that is never cached. */
export function send(res: ServerResponse, status: number, body: string, type: string): void {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": Buffer.byteLength(body),
    "Cache-Control": "no-store",
  });
  res.end(body);
}

export function clientIp(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
}

/** A MAC in any common spelling ("52-54-00-…", "525400…"), normalised; undefined if not one. */
export function macFromQuery(value: string | null): string | undefined {
  if (!value) return undefined;
  try {
    return formatMac(parseMac(value));
  } catch {
    return undefined;
  }
}
