// Every entry kind, in the order an entry is recognised by its keys. A new kind: its own file
// implementing EntryKind (kind.ts), and one line here.
import { chainKind } from "./chain.ts";
import { exitKind } from "./exit.ts";
import { imageKind } from "./image.ts";
import { isoKind } from "./iso.ts";
import { kernelKind } from "./kernel.ts";
import type { EntryKind } from "./kind.ts";
import { localKind } from "./local.ts";
import { menuKind } from "./menu.ts";
import { sanbootKind } from "./sanboot.ts";
import { shellKind } from "./shell.ts";

export const ENTRY_KINDS = [
  imageKind,
  isoKind,
  kernelKind,
  menuKind,
  chainKind,
  sanbootKind,
  localKind,
  shellKind,
  exitKind,
] as const;

type KindOf<K> = K extends EntryKind<infer E> ? E : never;

/** A configured entry: one of the kinds above. */
export type Entry = KindOf<(typeof ENTRY_KINDS)[number]>;

/** The kind module of an entry. */
export function kindOf<E extends Entry>(entry: E): EntryKind<E> {
  return ENTRY_KINDS.find((k) => k.kind === entry.kind) as unknown as EntryKind<E>;
}
