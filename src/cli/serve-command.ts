// `inetboot serve`: the boot server (DHCP/proxyDHCP, TFTP, HTTP) until interrupted.
import type { Command } from "commander";
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
      const server = new BootServer(config, { logger: createLogger("serve") });
      await server.start();
      for (const line of summary(config, server)) console.error(line);
      await new Promise<void>((resolve) => {
        const stop = (): void => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await server.stop();
      console.error(`inetboot serve: stopped; ${server.events.machines().length} machines seen`);
    });
}
