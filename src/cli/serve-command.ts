// `inetboot serve`: the boot server (DHCP/proxyDHCP, TFTP, HTTP) until interrupted.
import { watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import type { Command } from "commander";
import { ConfigReloader } from "../serve/config-reloader.ts";
import { createLogger } from "../lib/log.ts";
import { BootServer } from "../serve/boot-server.ts";
import { ConfigError, loadConfig } from "../serve/config.ts";
import type { ServeConfig } from "../serve/config.ts";

function summary(config: ServeConfig, server: BootServer): string[] {
  const lines = [`inetboot serve: ${config.source}`];
  lines.push(`  HTTP   ${server.baseUrl}/  (iPXE script: ${server.baseUrl}/boot.ipxe)`);
  lines.push(
    `  TFTP   ${config.tftp.enabled ? `port ${server.tftpPort}, first stages: ${Object.keys(config.tftp.firstStages).join(", ") || "none found (install Debian's ipxe)"}` : "off"}`,
  );
  const loaders = Object.entries(config.loaders.defaults)
    .map(([fw, l]) => `${fw} ${l === "shim" ? "shim → GRUB" : l === "grub" ? "GRUB" : "iPXE"}`)
    .join(", ");
  lines.push(`  loader ${loaders} (loaders: and machine rules' loader: change it)`);
  lines.push(
    `  DHCP   ${config.dhcp.mode === "off" ? "off" : `${config.dhcp.mode} on ${config.listen.interface} (${server.address})`}`,
  );
  const entries = [...config.entries.keys()].join(", ");
  lines.push(
    `  boot   default ${config.default}; entries ${entries}; ${config.machines.length} machine rules`,
  );
  for (const w of config.warnings) lines.push(`  warning: ${w}`);
  if (config.source.startsWith("(")) {
    lines.push(
      "",
      "Next: write a config (see docs/serve.md), e.g. serve.yaml with entries and",
      "dhcp: { mode: proxy } on your boot network's interface, then: npx inetboot serve --config serve.yaml",
      `Try it now: curl ${server.baseUrl}/boot.ipxe   (iPXE shell: chain ${server.baseUrl}/boot.ipxe)`,
    );
  }
  return lines;
}

/**
 * Reloads the configuration on SIGHUP and when its file changes (the folder is watched:
 * editors replace files), saying on stderr what changed or why it was refused.
 */
function watchConfig(reloader: ConfigReloader): { close(): Promise<void> } {
  let timer: NodeJS.Timeout | undefined;
  const path = reloader.path;
  const reload = (why: string): void => {
    reloader.reload().then(
      (changes) => console.error(`inetboot serve: reloaded ${path} (${why}): ${changes}`),
      (err: Error) =>
        console.error(
          `inetboot serve: ${path} (${why}) refused; still serving the previous configuration:\n  ${err.message.split("\n").join("\n  ")}`,
        ),
    );
  };
  const onHup = (): void => reload("SIGHUP");
  process.on("SIGHUP", onHup);
  let watcher: FSWatcher | null = null;
  try {
    watcher = watch(dirname(resolve(path)), (_event, file) => {
      if (file !== basename(path)) return;
      clearTimeout(timer);
      // An editor's save is a few events; read once it settles.
      timer = setTimeout(() => reload("file changed"), 300);
    });
    watcher.on("error", (err) =>
      console.error(
        `inetboot serve: stopped watching ${path} (${err.message}); SIGHUP still reloads`,
      ),
    );
  } catch (err) {
    // Out of inotify watches (ENOSPC) or descriptors: SIGHUP still works.
    console.error(
      `inetboot serve: cannot watch ${path} (${(err as Error).message}); reload it with SIGHUP`,
    );
  }
  return {
    async close() {
      clearTimeout(timer);
      watcher?.close();
      process.off("SIGHUP", onHup);
      await reloader.idle();
    },
  };
}

export function registerServeCommand(program: Command): void {
  program
    .command("serve")
    .description("run the boot server: DHCP or proxyDHCP, TFTP and HTTP boot plans for iPXE")
    .option(
      "--config <file>",
      "YAML configuration (default: built-in: HTTP on 8080, DHCP and TFTP off)",
    )
    .option("--check", "validate the configuration, print what would run, and exit")
    .option("--http-port <port>", "override http.port")
    .action(async (opts: { config?: string; check?: boolean; httpPort?: string }) => {
      let config: ServeConfig;
      try {
        config = await loadConfig(opts.config ?? null);
      } catch (err) {
        if (err instanceof ConfigError) {
          console.error(err.message);
          process.exitCode = 2;
          return;
        }
        throw err;
      }
      if (opts.httpPort !== undefined) config.http.port = Number(opts.httpPort);
      if (opts.check) {
        console.log(
          `${config.source}: OK (${config.entries.size} entries, ${config.machines.length} machine rules)`,
        );
        for (const w of config.warnings) console.log(`warning: ${w}`);
        return;
      }
      const log = createLogger("serve");
      const server = new BootServer(config, { logger: log });
      await server.start();
      for (const line of summary(config, server)) console.error(line);
      const reloader = opts.config
        ? new ConfigReloader(opts.config, server, (c) => {
            if (opts.httpPort !== undefined) c.http.port = Number(opts.httpPort);
          })
        : null;
      if (reloader) server.setReloader(() => reloader.reload());
      const watch = reloader ? watchConfig(reloader) : null;
      await new Promise<void>((resolve) => {
        const stop = (): void => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await watch?.close();
      await server.stop();
      console.error(`inetboot serve: stopped; ${server.events.machines().length} machines seen`);
    });
}
