// `inetboot init`: from nothing to a working serve.yaml. Looks at the machine's interfaces,
// asks for (or takes) the boot interface, asks the link whether a DHCP server already runs
// there, and writes proxy mode beside it or full mode with a free range, with a menu of what it
// can boot out of the box; --systemd installs and starts the service. Never replaces a file
// without --force; run again with the same answers, it changes nothing.
import type { Command } from "commander";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { copyFile, mkdir } from "node:fs/promises";
import { networkInterfaces } from "node:os";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline/promises";
import { isSea } from "node:sea";
import { writeFileAtomic } from "../lib/atomic-file.ts";
import { ConfigError, parseConfig } from "../serve/config.ts";
import {
  DEBIAN_INSTALLER_PACKAGE,
  findDebianInstaller,
  freeRange,
  starterConfig,
} from "../serve/config/starter.ts";
import type { StarterFacts } from "../serve/config/starter.ts";
import { decideDhcp } from "./init-probe.ts";
import type { DhcpDecision } from "./init-probe.ts";
import { printJson } from "./output.ts";
import { systemdUnit } from "./systemd-unit.ts";

interface InitOptions {
  interface?: string;
  config?: string;
  dhcp?: "proxy" | "full";
  probeSeconds: string;
  iso?: string;
  chain?: string;
  console?: string;
  installer: boolean;
  systemd?: boolean;
  printUnit?: boolean;
  user?: string;
  exec?: string;
  force?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

interface Candidate {
  name: string;
  address: string;
  netmask: string;
  mac: string;
  up: boolean;
}

const UNIT_PATH = "/etc/systemd/system/inetboot.service";
const PACKAGED_UNIT = "/usr/lib/systemd/system/inetboot.service";
/** The Debian package's serve.yaml as shipped: an unedited /etc copy is replaced without --force. */
const PACKAGED_CONFIG = "/usr/share/inetboot/serve.yaml";
/** Where the service's configuration lives (the package's conffile, the --systemd default). */
const PACKAGED_CONFIG_PATH = "/etc/inetboot/serve.yaml";

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** The IPv4 interfaces a LAN could be on (no loopback), with their link state. */
function candidates(): Candidate[] {
  const out: Candidate[] = [];
  for (const [name, infos] of Object.entries(networkInterfaces())) {
    const v4 = infos?.find((i) => i.family === "IPv4" && !i.internal);
    if (!v4) continue;
    let up = true;
    try {
      up = readFileSync(`/sys/class/net/${name}/operstate`, "utf8").trim() !== "down";
    } catch {
      // not Linux: assume up
    }
    out.push({ name, address: v4.address, netmask: v4.netmask, mac: v4.mac, up });
  }
  return out;
}

const describe = (c: Candidate): string =>
  `${c.name} (${c.address}, netmask ${c.netmask}${c.up ? "" : ", link down"})`;

async function chooseInterface(opts: InitOptions): Promise<Candidate> {
  const all = candidates();
  const list = all.map(describe).join("; ") || "none with an IPv4 address";
  if (opts.interface) {
    const hit = all.find((c) => c.name === opts.interface);
    if (!hit) {
      throw new Error(
        `interface ${opts.interface} has no IPv4 address here (interfaces: ${list}); give the boot LAN's interface an address first`,
      );
    }
    return hit;
  }
  if (all.length === 1) return all[0];
  if (all.length === 0)
    throw new Error(`no interface with an IPv4 address: connect and configure the boot LAN first`);
  if (!process.stdin.isTTY) {
    throw new Error(
      `several interfaces (${list}): say which one machines boot on with --interface NAME`,
    );
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    all.forEach((c, i) => console.error(`  ${i + 1}. ${describe(c)}`));
    for (;;) {
      const answer = (
        await rl.question(`Which interface do machines boot on? [1-${all.length}] `)
      ).trim();
      const hit = all[Number(answer) - 1] ?? all.find((c) => c.name === answer);
      if (hit) return hit;
    }
  } finally {
    rl.close();
  }
}

/** How this inetboot was started, to put in the unit and the printed next command. */
function selfCommand(): string[] {
  if (isSea()) return [process.execPath];
  return [process.execPath, resolve(process.argv[1])];
}

function facts(c: Candidate, decision: DhcpDecision, opts: InitOptions): StarterFacts {
  let dhcp: StarterFacts["dhcp"];
  if (decision.mode === "proxy") dhcp = { mode: "proxy", servers: decision.servers };
  else {
    const range = freeRange(c.address, c.netmask);
    if (!range) {
      throw new Error(
        `${c.name}'s subnet (netmask ${c.netmask}) is too small to hand out addresses; use a /28 or wider, or --dhcp proxy beside another DHCP server`,
      );
    }
    dhcp = { mode: "full", range };
  }
  const installer = opts.installer ? findDebianInstaller() : undefined;
  return {
    interface: c.name,
    address: c.address,
    dhcp,
    probed: decision.probed,
    state: opts.systemd ? "/var/lib/inetboot" : undefined,
    cache: opts.systemd ? "/var/cache/inetboot" : undefined,
    debianInstaller: installer,
    // A path is the config's to resolve against its folder: give it absolute, as the user meant.
    iso: opts.iso && !/^https?:\/\//i.test(opts.iso) ? resolve(opts.iso) : opts.iso,
    chain: opts.chain,
    console: opts.console,
  };
}

/** Writes the file unless it holds something else (and no --force); returns what happened. */
async function writeConfig(
  path: string,
  text: string,
  force: boolean,
): Promise<"written" | "unchanged" | "replaced"> {
  const old = readOrUndefined(path);
  if (old === text) return "unchanged";
  if (old !== undefined && !force && old !== readOrUndefined(PACKAGED_CONFIG)) {
    throw new Error(
      `${path} exists and holds another configuration: kept as it is. See what init would write with --dry-run; --force replaces it (the old one is kept as ${path}.bak)`,
    );
  }
  await mkdir(dirname(path), { recursive: true });
  if (old !== undefined) await copyFile(path, `${path}.bak`); // with the old file's mode
  await writeFileAtomic(path, text);
  return old === undefined ? "written" : "replaced";
}

function systemctl(args: string[]): void {
  execFileSync("systemctl", args, { stdio: ["ignore", "inherit", "inherit"] });
}

function isActive(): boolean {
  try {
    execFileSync("systemctl", ["is-active", "--quiet", "inetboot"]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Installs the unit (unless the package did), enables it, and restarts the server when its
 * configuration or unit changed (init writes listen and dhcp, which a reload cannot change); a
 * running server with nothing changed is left alone, its boots in progress too.
 */
async function installService(config: string, outcome: string): Promise<string> {
  let unitChanged = false;
  if (!existsSync(PACKAGED_UNIT)) {
    const unit = systemdUnit({ exec: selfCommand(), config });
    if (readOrUndefined(UNIT_PATH) !== unit) {
      await writeFileAtomic(UNIT_PATH, unit);
      systemctl(["daemon-reload"]);
      unitChanged = true;
    }
  }
  systemctl(["enable", "inetboot"]);
  if (outcome === "unchanged" && !unitChanged && isActive()) return "already running";
  systemctl(["restart", "inetboot"]);
  return "started";
}

export function registerInitCommand(program: Command): void {
  program
    .command("init")
    .description(
      "write a working serve.yaml for this machine's boot LAN (probes it for a DHCP server)",
    )
    .option(
      "--interface <name>",
      "the interface machines boot on (asked when several and a terminal)",
    )
    .option(
      "--config <file>",
      "where to write (default ./serve.yaml; /etc/inetboot/serve.yaml with --systemd or the Debian package)",
    )
    .option(
      "--dhcp <mode>",
      "skip the probe: proxy (a DHCP server runs on the LAN) or full (none does)",
    )
    .option(
      "--probe-seconds <s>",
      "how long to wait for DHCP offers (servers such as dnsmasq ping an address for seconds before offering it)",
      "6",
    )
    .option("--iso <url>", "a live ISO to boot (an http(s) URL or a path)")
    .option("--chain <url>", "an iPXE script to chain from the menu (a netboot.xyz-style menu)")
    .option("--console <tty>", "kernels print to this serial console too (e.g. ttyS0,115200)")
    .option("--no-installer", "leave Debian's netboot installer out of the menu even if installed")
    .option("--systemd", "install the systemd unit, enable it and (re)start the service")
    .option("--print-unit", "print the systemd unit for this inetboot and --config, and stop")
    .option("--user <name>", "with --print-unit: the system user the unit runs as")
    .option("--exec <path>", "with --print-unit: the inetboot executable (default: this one)")
    .option("--force", "replace an existing configuration (kept as FILE.bak)")
    .option("--dry-run", "print the configuration instead of writing it")
    .option("--json", "print the result as JSON")
    .action(async (opts: InitOptions) => {
      if (opts.dhcp !== undefined && opts.dhcp !== "proxy" && opts.dhcp !== "full") {
        throw new Error(`--dhcp: proxy or full, not "${String(opts.dhcp)}"`);
      }
      const config = resolve(
        opts.config ??
          (opts.systemd || existsSync(PACKAGED_CONFIG) ? PACKAGED_CONFIG_PATH : "serve.yaml"),
      );
      if (opts.printUnit) {
        const exec = opts.exec ? [opts.exec] : selfCommand();
        process.stdout.write(systemdUnit({ exec, config, user: opts.user }));
        return;
      }
      if (opts.systemd && existsSync(PACKAGED_UNIT) && config !== PACKAGED_CONFIG_PATH) {
        throw new Error(
          `the Debian package's service reads ${PACKAGED_CONFIG_PATH}: leave out --config with --systemd (or change ExecStart with \`systemctl edit inetboot\`)`,
        );
      }
      if (opts.systemd && !existsSync("/run/systemd/system")) {
        throw new Error(
          `systemd is not running on this machine: leave out --systemd, and start the server with \`inetboot serve --config ${config}\` under your own supervisor`,
        );
      }
      // --dry-run keeps stdout for the file; what init found goes to stderr.
      const say = opts.json
        ? () => {}
        : (line: string) => (opts.dryRun ? console.error(line) : console.log(line));
      const iface = await chooseInterface(opts);
      say(`Boot interface: ${describe(iface)}`);
      const decision = await decideDhcp(iface, opts.dhcp, Number(opts.probeSeconds), say);
      const f = facts(iface, decision, opts);
      const text = starterConfig(f);
      let warnings: string[];
      try {
        warnings = parseConfig(text, config).warnings;
      } catch (err) {
        if (err instanceof ConfigError)
          throw new Error(
            `init made a configuration serve refuses (a bug: please report it):\n${err.problems.join("\n")}\n${text}`,
            { cause: err },
          );
        throw err;
      }
      if (opts.dryRun) {
        process.stdout.write(text);
        return;
      }
      const outcome = await writeConfig(config, text, opts.force ?? false);
      const service = opts.systemd ? await installService(config, outcome) : undefined;
      const next = opts.systemd
        ? "systemctl status inetboot; journalctl -u inetboot -f"
        : `${process.getuid?.() === 0 ? "" : "sudo "}${selfCommand().join(" ")} serve --config ${config}`;
      if (opts.json) {
        printJson({
          config,
          outcome,
          mode: f.dhcp.mode,
          interface: iface.name,
          servers: decision.servers,
          warnings,
          service,
          next,
        });
        return;
      }
      say(
        `${outcome === "unchanged" ? "Unchanged" : outcome === "replaced" ? "Replaced" : "Wrote"} ${config}: ${f.dhcp.mode === "proxy" ? "proxy DHCP beside the LAN's DHCP server" : `full DHCP, addresses ${f.dhcp.mode === "full" ? f.dhcp.range.join("–") : ""}`}`,
      );
      const booted = [
        f.debianInstaller && "Debian's installer",
        f.iso && "the live ISO",
        f.chain && "the chained menu",
      ].filter(Boolean);
      say(`  menu: ${[...booted, "the local disk", "the iPXE shell"].join(", ")}`);
      if (!f.debianInstaller && opts.installer)
        say(`  (apt install ${DEBIAN_INSTALLER_PACKAGE} adds Debian's installer)`);
      for (const w of warnings) say(`  ! ${w}`);
      if (service) say(`Service ${service}.`);
      say(`Next: ${next}`);
    });
}
