// Leave the boot loader with a chosen exit code and a message on the screen: the firmware falls
// through to its next boot device (a machine told "not today", a retired one, a maintenance
// window). `exit: 1` or `exit: { code: 1, message: "…" }`.
import { html } from "../ui/html.ts";
import type { EntryBase, EntryKind } from "./kind.ts";

export type ExitEntry = EntryBase & { kind: "exit"; code: number; message?: string };

export const exitKind: EntryKind<ExitEntry> = {
  kind: "exit",
  keys: ["exit"],
  parse(c, o, base, { path }) {
    const p = [...path, "exit"];
    if (typeof o.exit === "object" && o.exit !== null && !Array.isArray(o.exit)) {
      const x = c.object(o.exit, p, ["code", "message"]) ?? {};
      return {
        ...base,
        kind: "exit",
        code: c.int(x.code, [...p, "code"], 0, 255) ?? 0,
        message: c.text(x.message, [...p, "message"]),
      };
    }
    const code = o.exit === true ? 0 : c.int(o.exit, p, 0, 255);
    return code === undefined ? undefined : { ...base, kind: "exit", code };
  },
  plan: (entry) => ({ kind: "exit", code: entry.code, message: entry.message }),
  describe: (e) =>
    html`exit with code ${String(e.code)}${e.message ? html`, saying “${e.message}”` : ""}`,
};
