// A real nginx serving a folder on loopback, started and stopped by the test.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { requireTool, tempDir } from "./helpers.ts";
import type { Cleanup, Scope } from "./helpers.ts";
import { createLan } from "./netns.ts";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export interface LoggedRequest {
  method: string;
  path: string;
  status: number;
  /** Body bytes sent. */
  bytes: number;
}

/** The requests in an nginx access log (default "combined" format), oldest first. */
export function accessLogRequests(accessLog: string): LoggedRequest[] {
  return readFileSync(accessLog, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const m = /"(\S+) (\S+) [^"]*" (\d{3}) (\d+)/.exec(l);
      return {
        method: m?.[1] ?? "",
        path: m?.[2] ?? "",
        status: Number(m?.[3] ?? 0),
        bytes: Number(m?.[4] ?? 0),
      };
    });
}

export interface Nginx {
  url: string;
  accessLog: string;
}

export interface NginxProcess extends Nginx {
  stop: () => void;
}

/** An nginx.conf serving `root` on 127.0.0.1:`port`, keeping its files in `dir`. */
export function nginxConfig(root: string, dir: string, port: number): string {
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `daemon off;
${process.getuid?.() === 0 ? "user root;" : ""}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 100000;
  sendfile on;
  server {
    listen 127.0.0.1:${port};
    root ${root};
  }
}
`,
  );
  return conf;
}

/** Starts nginx serving `root` at http://127.0.0.1:PORT/ with its files in `dir`. */
export async function startNginxProcess(root: string, dir: string): Promise<NginxProcess> {
  const port = await freePort();
  const conf = nginxConfig(root, dir, port);
  const child = spawn("/usr/sbin/nginx", ["-c", conf, "-p", dir], { stdio: "ignore" });
  const url = `http://127.0.0.1:${port}/`;
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(url, { method: "HEAD" });
      return { url, accessLog: join(dir, "access.log"), stop: () => child.kill("SIGTERM") };
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  child.kill("SIGKILL");
  throw new Error(`nginx did not start on ${url}; see ${dir}/error.log`);
}

/** Starts nginx serving `root` for a test (stopped after it); null when nginx cannot be had. */
export async function startNginx(t: Scope, root: string): Promise<Nginx | null> {
  if (!requireTool(t, "nginx", "nginx-light")) return null;
  const nginx = await startNginxProcess(root, tempDir(t, "inetboot-nginx-"));
  t.after(() => nginx.stop());
  return nginx;
}

/** A test LAN with a tap for QEMU, and nginx serving `web` on port 8090 in the server's namespace. */
export function lanWithOrigin(t: Cleanup, dir: string, web: string) {
  const lan = createLan(t);
  const tap = lan.addTap();
  const nginxDir = join(dir, "nginx");
  mkdirSync(nginxDir);
  lan.spawn(lan.server, "/usr/sbin/nginx", [
    "-c",
    nginxConfig(web, nginxDir, 8090),
    "-p",
    nginxDir,
  ]);
  return { lan, tap, nginxDir };
}
