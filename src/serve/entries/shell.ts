// The boot loader's shell, for people at the console.
import type { EntryBase, EntryKind } from "./kind.ts";

export type ShellEntry = EntryBase & { kind: "shell" };

export const shellKind: EntryKind<ShellEntry> = {
  kind: "shell",
  keys: ["shell"],
  parse: (_c, _o, base) => ({ ...base, kind: "shell" }),
  plan: () => ({ kind: "shell" }),
  describe: () => "the iPXE shell",
};
