// The boot server's routes, in one table (routes.ts): what machines fetch, the API, /metrics
// and the dashboard.
import type { ApiRoutes } from "./api-routes.ts";
import type { Dashboard } from "./dashboard.ts";
import type { MachineRoutes } from "./machine-routes.ts";
import type { RegistryRoutes } from "./registry-routes.ts";
import { HttpError } from "./http-util.ts";
import type { Route } from "./routes.ts";

const d = decodeURIComponent;

export function bootServerRoutes(parts: {
  machine: MachineRoutes;
  api: ApiRoutes;
  v1: RegistryRoutes;
  dashboard: Dashboard;
  metrics: () => Promise<string>;
}): Route[] {
  const { machine, api, v1, dashboard } = parts;
  const m = (pattern: RegExp, label: string, handle: Route["handle"]): Route => ({
    method: "GET",
    pattern,
    audience: "machine",
    label,
    handle,
  });
  const p = (
    pattern: RegExp,
    label: string,
    handle: Route["handle"],
    method: Route["method"] = "GET",
  ): Route => ({ method, pattern, audience: "people", label, handle });
  return [
    m(/^\/boot\.ipxe$/, "/boot.ipxe", (req, res, _m, url) => machine.bootScript(req, res, url)),
    m(/^\/ipxe\/boot$/, "/ipxe/boot", (req, res, _m, url) => machine.plan(req, res, url)),
    m(/^\/ipxe\/entry\/([^/]+)$/, "/ipxe/entry", (req, res, x, url) =>
      machine.entry(req, res, url, d(x[1])),
    ),
    m(/^\/files\/([^/]+)\/(kernel|initrd\/(\d+))$/, "/files", (req, res, x, url) =>
      machine.file(req, res, url, d(x[1]), x[3] === undefined ? -1 : Number(x[3])),
    ),
    m(/^\/cloud-init\/([^/]+)\/([^/]+)\/([^/]+)$/, "/cloud-init", (req, res, x) =>
      machine.machineFile(req, res, "cloud-init", d(x[1]), d(x[2]), d(x[3])),
    ),
    m(/^\/machine-files\/([^/]+)\/([^/]+)\/([^/]+)$/, "/machine-files", (req, res, x) =>
      machine.machineFile(req, res, "file", d(x[1]), d(x[2]), d(x[3])),
    ),
    m(/^\/iso\/([^/]+)\/(.+)$/, "/iso", (req, res, x) => machine.iso(req, res, d(x[1]), x[2])),
    m(/^\/firmware\/([^/]+)$/, "/firmware", (req, res, x) => machine.firmware(req, res, d(x[1]))),
    m(
      /^\/healthz$/,
      "/healthz",
      (_req, res) => void res.writeHead(200, { "Content-Type": "text/plain" }).end("ok\n"),
    ),

    p(/^\/$/, "/", (req, res) => api.index(req, res)),
    p(/^\/metrics$/, "/metrics", async (_req, res) => {
      const text = await parts.metrics();
      res.writeHead(200, {
        "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
        "Content-Length": Buffer.byteLength(text),
        "Cache-Control": "no-store",
      });
      res.end(text);
    }),
    p(/^\/api\/events\/stream$/, "/api", (req, res, _x, url) => api.stream(req, res, url)),
    p(/^\/api\/events$/, "/api", (req, res, _x, url) => api.events(req, res, url)),
    p(/^\/api\/machines$/, "/api", (req, res) => api.machines(req, res)),
    p(/^\/api\/images$/, "/api", (req, res) => api.images(req, res)),
    p(/^\/api\/images\/([^/]+)\/profile$/, "/api", (req, res, x) => api.profile(req, res, d(x[1]))),
    p(/^\/api\/config$/, "/api", (req, res) => api.config(req, res)),
    p(/^\/api\/v1\/openapi\.json$/, "/api/v1", (req, res) => v1.openapi(req, res)),
    p(/^\/api\/v1\/machines$/, "/api/v1", (req, res) => v1.list(req, res)),
    p(/^\/api\/v1\/machines\/([^/]+)$/, "/api/v1", (req, res, x) => v1.get(req, res, d(x[1]))),
    p(
      /^\/api\/v1\/machines\/([^/]+)$/,
      "/api/v1",
      (req, res, x) => v1.put(req, res, d(x[1]), false),
      "PUT",
    ),
    p(
      /^\/api\/v1\/machines\/([^/]+)$/,
      "/api/v1",
      (req, res, x) => v1.put(req, res, d(x[1]), true),
      "PATCH",
    ),
    p(
      /^\/api\/v1\/machines\/([^/]+)$/,
      "/api/v1",
      (req, res, x) => v1.delete(req, res, d(x[1])),
      "DELETE",
    ),
    p(
      /^\/api\/v1\/machines\/([^/]+)\/next$/,
      "/api/v1",
      (req, res, x) => v1.next(req, res, d(x[1]), false),
      "PUT",
    ),
    p(
      /^\/api\/v1\/machines\/([^/]+)\/next$/,
      "/api/v1",
      (req, res, x) => v1.next(req, res, d(x[1]), true),
      "DELETE",
    ),
    p(
      /^\/api\/v1\/machines\/([^/]+)\/reset-disk$/,
      "/api/v1",
      (req, res, x) => v1.resetDisk(req, res, d(x[1])),
      "POST",
    ),
    p(
      /^\/api\/v1\/images\/([^/]+)\/pin$/,
      "/api/v1",
      (req, res, x) => v1.pin(req, res, d(x[1]), false),
      "PUT",
    ),
    p(
      /^\/api\/v1\/images\/([^/]+)\/pin$/,
      "/api/v1",
      (req, res, x) => v1.pin(req, res, d(x[1]), true),
      "DELETE",
    ),
    p(/^\/api\/v1\/reload$/, "/api/v1", (req, res) => v1.reload(req, res), "POST"),
    p(
      /^\/ui\/?$/,
      "/ui",
      (_req, res) => void res.writeHead(302, { Location: "/ui/machines" }).end(),
    ),
    p(/^\/ui\/machines$/, "/ui", (req, res, _x, url) => dashboard.machines(req, res, url)),
    p(/^\/ui\/machines\/([^/]+)$/, "/ui", (req, res, x) => dashboard.machine(req, res, d(x[1]))),
    p(/^\/ui\/catalog$/, "/ui", (req, res) => dashboard.catalog(req, res)),
    p(/^\/ui\/images$/, "/ui", (req, res) => dashboard.images(req, res)),
    p(/^\/ui\/cache$/, "/ui", (req, res) => dashboard.cache(req, res)),
    p(
      /^\/ui\/images\/([^/]+)\/pin$/,
      "/ui",
      (req, res, x) => dashboard.pin(req, res, d(x[1])),
      "POST",
    ),
    p(
      /^\/ui\/machines\/([^/]+)\/registry$/,
      "/ui",
      (req, res, x) => dashboard.registry(req, res, d(x[1])),
      "POST",
    ),
    p(/^\/ui\/registry$/, "/ui", (req, res) => dashboard.registry(req, res, null), "POST"),
    p(
      /^\/ui\/machines\/([^/]+)\/reset-disk$/,
      "/ui",
      (req, res, x) => dashboard.resetDisk(req, res, d(x[1])),
      "POST",
    ),
    p(/^\/ui\/.*$/, "/ui", (req, res, _x, url) => dashboard.notFound(req, res, url.pathname)),
    p(/^\/api\/.*$/, "/api", (_req, _res, _x, url) => {
      throw new HttpError(
        404,
        `Nothing at ${url.pathname}; the API is at /api/machines and /api/events.`,
      );
    }),
  ];
}
