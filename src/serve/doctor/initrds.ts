// The doctor looks inside the initrds of image entries that give their own kernel: can they
// mount the NBD root (an nbd-client of their own, or an initramfs-tools initrd for the
// server's overlay)? The configuration check cannot say: reading an initrd takes seconds.
import { scanInitrd } from "../../boot/initrd-scan.ts";
import type { InitrdFacts } from "../../boot/initrd-scan.ts";
import type { Entry, ServeConfig } from "../config.ts";
import { fail, mapLimited, ok, warn } from "./check.ts";
import type { Check } from "./check.ts";

/** Time one initrd may take to look through. */
export const INITRD_SCAN_MS = 20_000;

type ImageEntry = Extract<Entry, { kind: "image" }>;

async function verdict(e: ImageEntry): Promise<Check> {
  const name = `entry ${e.name} nbd root`;
  const local = e.initrd.flatMap((r) => (r.path ? [r.path] : []));
  if (local.length < e.initrd.length)
    return warn(
      name,
      "an initrd is a URL: not looked inside",
      "check it has nbd-client: inetboot image inspect, or lsinitramfs INITRD | grep nbd-client",
    );
  let facts: InitrdFacts[];
  try {
    facts = await Promise.all(local.map((p) => scanInitrd(p, { timeoutMs: INITRD_SCAN_MS })));
  } catch (err) {
    return warn(name, `cannot look inside: ${(err as Error).message}`, "see the entry's files");
  }
  const client = facts.find((f) => f.nbdClient)?.nbdClient;
  const builder = facts.find((f) => f.builder !== "unknown")?.builder ?? "unknown";
  if (e.nbdOverlay === true) {
    return builder === "dracut"
      ? fail(
          name,
          "nbd-overlay: true, but the initrd is dracut's (the overlay fits initramfs-tools)",
          "rebuild it with dracut --add nbd and set nbd-overlay: false",
        )
      : ok(name, `nbd-overlay adds the server's nbd-client to this ${builder} initrd`);
  }
  if (client) return ok(name, `the initrd has its own nbd-client (${client})`);
  return fail(
    name,
    `the ${builder} initrd has no nbd-client and nbd-overlay is off: the kernel cannot mount its root`,
    builder === "dracut"
      ? "rebuild it with dracut --add nbd"
      : "set nbd-overlay: true, or install nbd-client where the initrd is built and run update-initramfs -u",
  );
}

export function initrdChecks(config: ServeConfig): Promise<Check[]> {
  const entries = [...config.entries.values()].filter(
    (e): e is ImageEntry => e.kind === "image" && e.kernel !== undefined && e.initrd.length > 0,
  );
  return mapLimited(entries, 2, verdict);
}
