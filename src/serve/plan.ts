// Which entry a machine boots, and why: rules match on MAC, UUID, architecture, hostname and
// labels; the most specific matching rule wins (MAC/UUID over hostname over labels over arch),
// ties go to the rule written first; unmatched machines get `default`.
import type { MatchRule, ServeConfig } from "./config.ts";
import type { Loader } from "./config/loaders.ts";

export interface MachineFacts {
  mac?: string;
  uuid?: string;
  /** Names this machine's architecture answers to: "bios", "uefi", "x86_64", "uefi-x86_64", "7". */
  arch: string[];
  hostname?: string;
  labels: Record<string, string>;
}

export interface Choice {
  entry: string;
  /** The rule that chose it ("machines[0]", its name) or "default". */
  rule: string;
  line?: number;
}

const WEIGHT = { mac: 1000, uuid: 1000, hostname: 100, labels: 10, arch: 1 } as const;

/** The specificity of a rule for these facts, or -1 when it does not match. */
export function ruleScore(rule: MatchRule, facts: MachineFacts): number {
  const m = rule.match;
  let score = 0;
  if (m.mac !== undefined) {
    if (m.mac !== facts.mac?.toLowerCase()) return -1;
    score += WEIGHT.mac;
  }
  if (m.uuid !== undefined) {
    if (m.uuid !== facts.uuid?.toLowerCase()) return -1;
    score += WEIGHT.uuid;
  }
  if (m.hostname !== undefined) {
    if (m.hostname.toLowerCase() !== facts.hostname?.toLowerCase()) return -1;
    score += WEIGHT.hostname;
  }
  if (m.labels !== undefined) {
    for (const [k, v] of Object.entries(m.labels)) {
      if (facts.labels[k] !== v) return -1;
      score += WEIGHT.labels;
    }
  }
  if (m.arch !== undefined) {
    if (!facts.arch.includes(m.arch.toLowerCase())) return -1;
    score += WEIGHT.arch;
  }
  return score;
}

/** The most specific rule among `rules` that matches (the first one written on a tie). */
function bestRule(rules: MatchRule[], facts: MachineFacts): MatchRule | undefined {
  let best: MatchRule | undefined;
  let bestScore = -1;
  for (const rule of rules) {
    const score = ruleScore(rule, facts);
    if (score > bestScore) {
      best = rule;
      bestScore = score;
    }
  }
  return best;
}

export function chooseEntry(config: ServeConfig, facts: MachineFacts): Choice {
  const best = bestRule(config.machines, facts);
  return best
    ? { entry: best.boot, rule: best.name, line: best.line }
    : { entry: config.default, rule: "default" };
}

/** The architecture names for iPXE's ${buildarch} and ${platform}. */
export function ipxeArchNames(buildarch?: string, platform?: string): string[] {
  const names: string[] = [];
  const cpu = buildarch?.toLowerCase();
  const kind = platform === "efi" ? "uefi" : platform === "pcbios" ? "bios" : undefined;
  if (cpu) names.push(cpu);
  if (kind) names.push(kind);
  if (kind === "bios") names.push("bios");
  else if (kind && cpu) names.push(`${kind}-${cpu}`);
  return [...new Set(names)];
}

/** The architecture names for DHCP-reported firmware. */
export function firmwareArchNames(fw: { kind: string; cpu: string; arch: number }): string[] {
  const key = fw.kind === "bios" ? "bios" : `${fw.kind}-${fw.cpu}`;
  return [...new Set([fw.cpu, fw.kind, key, String(fw.arch)])];
}

/** A choice with one-shot entries already used up turned into `local` (saying why). */
export function resolveOnce(
  config: ServeConfig,
  consumed: (mac: string, entry: string) => boolean,
  choice: Choice,
  mac: string | undefined,
): Choice & { once?: string } {
  const entry = config.entries.get(choice.entry);
  if (entry?.once && mac && consumed(mac, entry.name)) {
    return {
      entry: "local",
      rule: `${choice.rule} (once: ${entry.name} already booted)`,
      once: entry.name,
    };
  }
  return choice;
}

/**
 * The boot loader a machine's firmware gets: the most specific matching rule that names one,
 * else the configured default for its firmware (`key`: "bios", "uefi-x86_64", …), else iPXE.
 */
export function chooseLoader(
  config: ServeConfig,
  facts: MachineFacts,
  key: string,
): { loader: Loader; rule: string } {
  const best = bestRule(
    config.machines.filter((r) => r.loader),
    facts,
  );
  if (best?.loader) return { loader: best.loader, rule: best.name };
  return { loader: config.loaders.defaults[key] ?? "ipxe", rule: `loaders.${key}` };
}
