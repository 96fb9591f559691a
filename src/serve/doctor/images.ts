// The doctor's image checks: each image entry's stores reachable, the release a boot would
// open signed by a key the entry trusts (the store's own signature check, anti-rollback state
// only read), its signature not dated in the future, and not older than a revision this
// server already accepted (it would refuse the downgrade).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { readLatest } from "../../store/catalog.ts";
import { latestPath, releasePath } from "../../store/layout.ts";
import { isUrl, openStore } from "../../store/open-store.ts";
import { openImage, openRelease, parseSource } from "../../store/source.ts";
import type { OpenedRelease } from "../../store/source.ts";
import { loadTrustedKeys } from "../../store/trust.ts";
import type { TrustPolicy } from "../../store/trust.ts";
import type { Entry, ServeConfig } from "../config.ts";
import { fail, mapLimited, ok, PROBE_CONCURRENCY, PROBE_TIMEOUT_MS, warn } from "./check.ts";
import type { Check, Prober } from "./check.ts";

type ImageEntry = Extract<Entry, { kind: "image" }>;

/** A signature may be dated this far ahead of this host's clock (clocks drift). */
export const SIGNATURE_SKEW_MS = 5 * 60_000;
/** Time allowed for opening a release pinned by digest (the index is read too). */
const PINNED_OPEN_MS = 10_000;

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The release a boot of `entry` would open from `store` (read-only: nothing is recorded). */
async function releaseIn(entry: ImageEntry, store: string, policy: TrustPolicy) {
  const spec = parseSource(entry.image.source);
  if (spec.kind !== "name" || spec.digest) {
    // A pin by digest or a release file: the store's own full open (it reads the index too).
    const image = await deadline(
      openImage(entry.image.source, { store, policy, allowUnsigned: entry.image.insecure }),
      PINNED_OPEN_MS,
      store,
    );
    await image.close();
    return image.release;
  }
  const reader = openStore(store, { attempts: 1, timeoutMs: PROBE_TIMEOUT_MS, connections: 2 });
  try {
    const revision = spec.revision ?? (await readLatest(reader, spec.name));
    if (revision === null)
      throw new Error(`no releases of ${spec.name} (no ${latestPath(spec.name)})`);
    return await openRelease(reader, releasePath(spec.name, revision), {
      policy,
      expect: { name: spec.name, revision },
    });
  } finally {
    await reader.close();
  }
}

/** The revision this server accepted last per image name (its anti-rollback state). */
async function acceptedRevisions(stateDir: string): Promise<Record<string, number>> {
  try {
    const text = await readFile(join(stateDir, "accepted-releases.json"), "utf8");
    const state = JSON.parse(text) as { accepted?: Record<string, { revision?: number }> };
    return Object.fromEntries(
      Object.entries(state.accepted ?? {}).map(([k, v]) => [k, Number(v.revision)]),
    );
  } catch {
    return {};
  }
}

function verdict(
  name: string,
  entry: ImageEntry,
  opened: OpenedRelease | null,
  accepted: Record<string, number>,
): Check {
  if (!opened)
    return warn(
      name,
      `${entry.image.source} is not a release`,
      "insecure: true serves it unchecked",
    );
  const { release, trust } = opened;
  const what = `${release.name} revision ${release.revision}`;
  if (!trust.verified)
    return warn(
      name,
      `${what} is not checked against any key (insecure: true)`,
      "sign releases (inetboot pack --key) and give the entry trust: [KEY.pub]",
    );
  const seconds = Number(/(?:^|\t)timestamp:(\d+)/.exec(trust.trustedComment ?? "")?.[1]);
  const signedAt = Number.isFinite(seconds) ? new Date(seconds * 1000) : null;
  const when = signedAt ? `, signed ${signedAt.toISOString()}` : "";
  if (signedAt && signedAt.getTime() > Date.now() + SIGNATURE_SKEW_MS)
    return fail(
      name,
      `${what} by key ${trust.signer}${when}: in this host's future`,
      "this host's clock (or the signer's) is wrong: set it right (timedatectl set-ntp true)",
    );
  const before = accepted[release.name];
  if (before > release.revision && !/@sha256:/.test(entry.image.source))
    return fail(
      name,
      `${what} by key ${trust.signer}${when}, but this server accepted revision ${before} before: it refuses the downgrade`,
      `publish a newer revision, or pin this one on purpose: name: ${release.name}@sha256:${opened.digest}`,
    );
  // Releases carry no expiry date: a trusted signature stays valid until its key is dropped.
  return ok(name, `${what} signed by trusted key ${trust.signer}${when}`);
}

export async function imageChecks(config: ServeConfig, prober: Prober): Promise<Check[]> {
  const images = [...config.entries.values()].filter((e) => e.kind === "image");
  const accepted = await acceptedRevisions(config.stateDir);
  const jobs = images.flatMap((e) => e.image.stores.map((store) => ({ e, store })));
  return mapLimited(jobs, PROBE_CONCURRENCY, async ({ e, store }) => {
    const name = `image ${e.name} store ${store}`;
    let policy: TrustPolicy;
    try {
      policy = {
        trusted: loadTrustedKeys(e.image.trust),
        insecure: e.image.insecure,
        statePath: null,
      };
    } catch (err) {
      return fail(name, (err as Error).message, `fix entries.${e.name}.image.trust`);
    }
    // The store's clock, for the clock check (and a quick look that it answers at all).
    if (isUrl(store)) {
      const spec = parseSource(e.image.source);
      const path = spec.kind === "name" ? latestPath(spec.name) : "";
      void (await prober.probe(new URL(path, store.endsWith("/") ? store : `${store}/`).href));
    }
    try {
      return verdict(name, e, await releaseIn(e, store, policy), accepted);
    } catch (err) {
      return fail(
        name,
        (err as Error).message,
        `make the store reachable and its release signed by a key in entries.${e.name}.image.trust`,
      );
    }
  });
}
