// Another boot loader or script by URL (netboot.xyz, a vendor's iPXE script).
import { code } from "../ui/html.ts";
import type { EntryBase, EntryKind } from "./kind.ts";

export type ChainEntry = EntryBase & { kind: "chain"; url: string };

export const chainKind: EntryKind<ChainEntry> = {
  kind: "chain",
  keys: ["chain"],
  parse(c, o, base, { path }) {
    const url = c.string(o.chain, [...path, "chain"], "a string (a URL)");
    return url ? { ...base, kind: "chain", url } : undefined;
  },
  plan: (entry) => ({ kind: "chain", url: entry.url }),
  describe: (e) => code(e.url),
};
