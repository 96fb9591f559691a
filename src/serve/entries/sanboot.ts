// A disk image by URL booted as a SAN disk (iSCSI, AoE or HTTP Range), the way gPXE did.
import { code } from "../ui/html.ts";
import type { EntryBase, EntryKind } from "./kind.ts";

export type SanbootEntry = EntryBase & { kind: "sanboot"; url: string };

export const sanbootKind: EntryKind<SanbootEntry> = {
  kind: "sanboot",
  keys: ["sanboot"],
  parse(c, o, base, { path }) {
    const url = c.string(o.sanboot, [...path, "sanboot"], "a string (a URL)");
    return url ? { ...base, kind: "sanboot", url } : undefined;
  },
  plan: (entry) => ({ kind: "sanboot", url: entry.url }),
  describe: (e) => code(e.url),
};
