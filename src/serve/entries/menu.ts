// A menu of entries: the machine's boot loader shows it, the chosen entry's plan is fetched.
import { html } from "../ui/html.ts";
import type { EntryBase, EntryKind } from "./kind.ts";

export type MenuEntry = EntryBase & {
  kind: "menu";
  items: string[];
  timeoutSeconds: number;
  defaultItem?: string;
};

export const menuKind: EntryKind<MenuEntry> = {
  kind: "menu",
  keys: ["menu", "timeout", "default"],
  parse(c, o, base, { path }) {
    if (!Array.isArray(o.menu) || o.menu.length === 0) {
      c.error([...path, "menu"], "expected a list of entry names");
      return undefined;
    }
    const items = o.menu
      .map((x, i) => c.text(x, [...path, "menu", i], "an entry name"))
      .filter((x) => x !== undefined);
    return {
      ...base,
      kind: "menu",
      items,
      timeoutSeconds: c.int(o.timeout, [...path, "timeout"], 0, 3600) ?? 10,
      defaultItem: c.text(o.default, [...path, "default"], "an entry name"),
    };
  },
  plan(entry, ctx) {
    const q = ctx.query ? `?${ctx.query}` : "";
    return {
      kind: "menu",
      title: entry.title,
      items: entry.items.map((name) => ({ name, title: ctx.titleOf(name) })),
      timeoutSeconds: entry.timeoutSeconds,
      defaultItem: entry.defaultItem ?? entry.items[0],
      entryUrl: `${ctx.base}/ipxe/entry/{name}${q}`,
    };
  },
  describe: (e) =>
    html`menu: ${e.items.join(", ")}; default ${e.defaultItem ?? e.items[0]} after
    ${e.timeoutSeconds} s`,
};
