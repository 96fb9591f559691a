// Boot from the local disk: the boot loader exits and the firmware goes on to the next device.
import type { EntryBase, EntryKind } from "./kind.ts";

export type LocalEntry = EntryBase & { kind: "local" };

export const localKind: EntryKind<LocalEntry> = {
  kind: "local",
  keys: ["local"],
  parse: (_c, _o, base) => ({ ...base, kind: "local" }),
  plan: () => ({ kind: "local" }),
  describe: () => "exit to the next boot device",
};
