// `inetboot doctor`: a running setup checked from the server's side — the configuration, the
// interface and ports, the first stages, each entry's files, URLs and stores, the cache and
// state folders, the clock — each check a line with what to fix. The CLI only prints these.
import { ConfigError, loadConfig } from "../config.ts";
import type { ServeConfig } from "../config.ts";
import { fail, ok, Prober, warn } from "./check.ts";
import type { Check } from "./check.ts";
import { cacheCheck, entryFileChecks, firstStageChecks, stateCheck } from "./files.ts";
import { imageChecks } from "./images.ts";
import { initrdChecks } from "./initrds.ts";
import {
  configuredPorts,
  findServer,
  interfaceCheck,
  listeners,
  portChecks,
  serverCheck,
} from "./network.ts";

export type { Check, Outcome } from "./check.ts";

/** A clock this far from the stores' and URLs' is worth a warning (signatures are dated). */
export const CLOCK_SKEW_WARN_MS = 3 * 60_000;

/** The configuration as `inetboot serve --check` sees it: problems fail, warnings warn. */
export async function configCheck(file: string | null): Promise<[Check, ServeConfig | null]> {
  const again = `inetboot serve${file ? ` --config ${file}` : ""} --check`;
  try {
    const config = await loadConfig(file);
    const summary = `${config.source}: ${config.entries.size} entries, ${config.machines.length} machine rules`;
    if (config.warnings.length === 0) return [ok("config", summary), config];
    const lines = config.warnings.map((w) => `\n  ${w}`).join("");
    return [
      warn(
        "config",
        `${summary}; ${config.warnings.length} warning(s):${lines}`,
        `each warning says its fix; then ${again}`,
      ),
      config,
    ];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const lines = err.problems.map((p) => `\n  ${p}`).join("");
    return [
      fail("config", `${err.problems.length} problem(s):${lines}`, `fix each line, then ${again}`),
      null,
    ];
  }
}

/** How to start the server with this configuration. */
function howToStart(config: ServeConfig, file: string | null): string {
  const privileged = configuredPorts(config).some(([, port]) => port < 1024);
  return `start it: inetboot serve${file ? ` --config ${file}` : ""}${privileged ? " (as root, or with CAP_NET_BIND_SERVICE: ports below 1024)" : ""}`;
}

/** The local clock against the Date headers of the stores and URLs reached. */
export function clockCheck(dates: Prober["dates"]): Check {
  if (dates.length === 0) return ok("clock", "no store or URL was reached to compare it with");
  const worst = dates.reduce((a, b) =>
    Math.abs(b.date.getTime() - b.at) > Math.abs(a.date.getTime() - a.at) ? b : a,
  );
  const off = Math.round((worst.at - worst.date.getTime()) / 1000);
  const detail = `${off >= 0 ? `${off} s ahead of` : `${-off} s behind`} ${new URL(worst.url).host} (the most off of ${dates.length} servers)`;
  if (Math.abs(off) * 1000 > CLOCK_SKEW_WARN_MS)
    return warn(
      "clock",
      detail,
      "set the clock right (timedatectl set-ntp true): release signatures and HTTPS certificates are dated",
    );
  return ok("clock", detail);
}

/** Every check, in the order they are printed. */
export async function runDoctor(file: string | null): Promise<Check[]> {
  const [config, loaded] = await configCheck(file);
  if (!loaded) return [config];
  const checks: Check[] = [config];
  const prober = new Prober();
  try {
    const iface = interfaceCheck(loaded);
    if (iface) checks.push(iface);
    const socks = await listeners();
    const server = await findServer(loaded, prober, socks.list);
    const start = howToStart(loaded, file);
    checks.push(serverCheck(server, loaded, start));
    checks.push(...(await portChecks(loaded, server, socks, start)));
    checks.push(...(await firstStageChecks(loaded)));
    // The server's own answers carry this host's clock: only remote ones count.
    prober.dates.length = 0;
    const [files, images, initrds] = await Promise.all([
      entryFileChecks(loaded, prober),
      imageChecks(loaded, prober),
      initrdChecks(loaded),
    ]);
    checks.push(...files, ...images, ...initrds);
    checks.push(await cacheCheck(loaded), await stateCheck(loaded));
    checks.push(clockCheck(prober.dates));
  } finally {
    await prober.close();
  }
  return checks;
}
