// The boot server's HTTP listener: every request goes through the route table, is counted by
// route and status, and what anyone on the LAN can open is bounded.
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { Metrics } from "./metrics.ts";
import type { RouteTable } from "./routes.ts";

/** Time a client has to send its request headers, and its whole request. */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;
/** Open HTTP connections; past it new ones are closed at once (no file descriptor runs out). */
export const MAX_HTTP_CONNECTIONS = 2048;

export async function listenHttp(
  routes: RouteTable,
  metrics: Metrics,
  at: { port: number; address: string },
): Promise<Server> {
  const server = createServer((req, res) => {
    const sentBefore = req.socket.bytesWritten;
    res.once("finish", () => {
      const route = routes.label(req.url ?? "/");
      const status = String(res.statusCode);
      metrics.inc("inetboot_http_requests_total", "HTTP requests by route and status", {
        ...{ route, status },
      });
      metrics.inc(
        "inetboot_http_sent_bytes_total",
        "HTTP bytes sent (headers and bodies) by route",
        { route },
        Math.max(0, req.socket.bytesWritten - sentBefore),
      );
    });
    void routes.dispatch(req, res);
  });
  // Bounds for what anyone on the LAN can open (docs/serve.md, "Limits").
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = HTTP_HEADERS_TIMEOUT_MS;
  server.requestTimeout = HTTP_REQUEST_TIMEOUT_MS;
  server.maxHeadersCount = 100;
  server.maxConnections = MAX_HTTP_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      reject(
        err.code === "EADDRINUSE"
          ? new Error(`HTTP port ${at.port} is in use; set http.port to another port`)
          : err,
      );
    });
    server.listen(at.port, at.address, () => resolve());
  });
  return server;
}
