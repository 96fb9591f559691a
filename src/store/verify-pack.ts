// `inetboot verify` for a release's boot pack: the file the release names is there, whole, with
// the digest it signs; its table checks out; every entry (a chunk or a piece) decompresses to
// the bytes its name says; and the boot profile beside it matches its digest. A client falls
// back to single chunks when a pack is unusable, so a broken one costs every boot its speed
// without failing any: only verify says so.
import { createHash } from "node:crypto";
import { decodePackTable, packPath, packTableBytes } from "./boot-pack.ts";
import type { PackEntry } from "./boot-pack.ts";
import { verifyChunk } from "./chunks.ts";
import { ChunkCorruptError } from "./errors.ts";
import { readReleaseProfile } from "./profile.ts";
import type { Release } from "./release.ts";
import type { StoreReader } from "./store.ts";

export interface PackReport {
  /** Entries checked (each piece and chunk of the pack once). */
  entries: number;
  /** What is wrong, in the words a store owner acts on; empty when the pack is sound. */
  problems: string[];
}

/** Checks the boot pack and profile `release` names (a release without one: nothing to do). */
export async function verifyReleasePack(
  reader: StoreReader,
  release: Release,
  imageSize: number,
  onEntry?: () => void,
): Promise<PackReport> {
  const report: PackReport = { entries: 0, problems: [] };
  if (release.profile) {
    try {
      const profile = await readReleaseProfile(reader, release.profile);
      if (!profile) report.problems.push(`its boot profile ${release.profile} is missing`);
    } catch (err) {
      report.problems.push((err as Error).message);
    }
  }
  const info = release.pack;
  if (!info) return report;
  const path = packPath(info.digest);
  const where = reader.describe(path);
  const size = await reader.size(path);
  if (size === null) {
    report.problems.push(`boot pack ${where} is missing (clients read its chunks one by one)`);
    return report;
  }
  if (size !== info.size) {
    report.problems.push(`boot pack ${where} is ${size} bytes, the release says ${info.size}`);
    return report;
  }
  const whole = createHash("sha256");
  const tableLength = packTableBytes(info);
  let entries: PackEntry[] | null = null;
  let next = 0;
  let pending: Buffer[] = [];
  let have = 0;
  const take = (n: number): Buffer => {
    const all = pending.length === 1 ? pending[0] : Buffer.concat(pending);
    const out = all.subarray(0, n);
    pending = all.length > n ? [all.subarray(n)] : [];
    have -= n;
    return out;
  };
  try {
    for await (const part of reader.readRange(path, 0, info.size)) {
      whole.update(part);
      pending.push(part);
      have += part.length;
      if (!entries && have >= tableLength) {
        entries = decodePackTable(take(tableLength), info, where, imageSize);
      }
      // Frames arrive in table order, each bounded by the table's check: one at a time.
      while (entries && next < entries.length && have >= entries[next].length) {
        const e = entries[next++];
        await checkEntry(take(e.length), e, where, report);
        onEntry?.();
      }
    }
  } catch (err) {
    report.problems.push((err as Error).message);
    return report;
  }
  const digest = whole.digest("hex");
  if (digest !== info.digest)
    report.problems.push(
      `boot pack ${where}: its SHA-256 is ${digest}, the release signs ${info.digest}`,
    );
  return report;
}

async function checkEntry(
  frame: Buffer,
  e: PackEntry,
  where: string,
  report: PackReport,
): Promise<void> {
  report.entries++;
  try {
    await verifyChunk(frame, e, `${where}@${e.offset}`);
  } catch (err) {
    if (!(err instanceof ChunkCorruptError)) throw err;
    report.problems.push(err.message);
  }
}
