// What a new configuration changes against the running one, for a reload: entries added,
// removed and changed, rules and the default; and the sections a running server cannot take
// without a restart (its sockets, folders and first stages), which make the reload refused
// with the old configuration kept.
import type { ServeConfig } from "./config.ts";

/** Sections that change live: plans, menus, rules, templates, the dashboard's tokens. */
const LIVE = new Set(["source", "entries", "machines", "default", "warnings", "ui"]);

export interface ConfigChanges {
  /** Sections that differ and need a restart ("dhcp", "tftp", …). */
  restart: string[];
  added: string[];
  removed: string[];
  changed: string[];
  rules: boolean;
  default: boolean;
  ui: boolean;
}

/** An entry as data, for comparing (its templates included: Maps as their pairs). */
const entryText = (e: unknown): string =>
  JSON.stringify(e, (_k, v: unknown) => (v instanceof Map ? [...v.entries()] : v));

export function configChanges(running: ServeConfig, next: ServeConfig): ConfigChanges {
  const restart = Object.keys({ ...running, ...next })
    .filter((k) => !LIVE.has(k))
    .filter(
      (k) =>
        JSON.stringify((running as unknown as Record<string, unknown>)[k]) !==
        JSON.stringify((next as unknown as Record<string, unknown>)[k]),
    );
  const added = [...next.entries.keys()].filter((n) => !running.entries.has(n));
  const removed = [...running.entries.keys()].filter((n) => !next.entries.has(n));
  const changed = [...next.entries.keys()].filter(
    (n) =>
      running.entries.has(n) &&
      entryText(running.entries.get(n)) !== entryText(next.entries.get(n)),
  );
  return {
    restart,
    added,
    removed,
    changed,
    rules:
      JSON.stringify(running.machines.map(({ line: _, ...r }) => r)) !==
      JSON.stringify(next.machines.map(({ line: _, ...r }) => r)),
    default: running.default !== next.default,
    ui: JSON.stringify(running.ui) !== JSON.stringify(next.ui),
  };
}

/** "entries added: a; changed: b; rules changed", or "nothing changed". */
export function changesText(c: ConfigChanges): string {
  const parts = [
    c.added.length ? `entries added: ${c.added.join(", ")}` : "",
    c.removed.length ? `entries removed: ${c.removed.join(", ")}` : "",
    c.changed.length ? `entries changed: ${c.changed.join(", ")}` : "",
    c.rules ? "machine rules changed" : "",
    c.default ? "default changed" : "",
    c.ui ? "ui changed" : "",
  ].filter(Boolean);
  return parts.join("; ") || "nothing changed";
}
