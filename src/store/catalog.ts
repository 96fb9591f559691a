// The list of images and revisions in a store. Stores that can list themselves (local folders)
// are scanned; every store also carries releases/index.json (rewritten by pack and gc) so HTTP
// stores can be listed.
import { NotFoundError, ReleaseError } from "./errors.ts";
import { CATALOG_PATH, isImageName, latestPath } from "./layout.ts";
import { MAX_CATALOG_BYTES, MAX_RELEASE_FILE_BYTES } from "./limits.ts";
import { isStoreWriter } from "./store.ts";
import type { StoreReader, StoreWriter } from "./store.ts";

export interface Catalog {
  /** Image name -> revisions present, ascending. */
  images: Record<string, number[]>;
}

/** The images and revisions a store holds, from a listing of its releases/ folder. */
export async function scanCatalog(store: Pick<StoreWriter, "list">): Promise<Catalog> {
  const images: Record<string, number[]> = {};
  const names = await store.list("releases");
  for (const name of names.sort()) {
    if (!isImageName(name)) continue;
    const revisions = (await store.list(`releases/${name}`))
      .map((f) => /^([1-9]\d*)\.json$/.exec(f))
      .filter((m) => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    if (revisions.length > 0) images[name] = revisions;
  }
  return { images };
}

/** Rewrites releases/index.json from a listing; returns what it wrote. */
export async function writeCatalog(store: Pick<StoreWriter, "list" | "replace">): Promise<Catalog> {
  const catalog = await scanCatalog(store);
  await store.replace(CATALOG_PATH, `${JSON.stringify(catalog, null, 2)}\n`);
  return catalog;
}

export async function readCatalog(reader: StoreReader): Promise<Catalog> {
  if (isStoreWriter(reader)) return scanCatalog(reader);
  let bytes: Buffer;
  try {
    bytes = await reader.read(CATALOG_PATH, { maxBytes: MAX_CATALOG_BYTES, what: "catalog" });
  } catch (err) {
    if (err instanceof NotFoundError) return { images: {} };
    throw err;
  }
  try {
    const parsed = JSON.parse(bytes.toString("utf8")) as Catalog;
    if (typeof parsed.images !== "object" || parsed.images === null) throw new Error("no images");
    return parsed;
  } catch (err) {
    throw new ReleaseError(
      `Cannot read ${reader.describe(CATALOG_PATH)}: ${(err as Error).message}`,
    );
  }
}

/** The revision `releases/NAME/latest` points to, or null when the image has none. */
export async function readLatest(reader: StoreReader, name: string): Promise<number | null> {
  let text: string;
  try {
    const bytes = await reader.read(latestPath(name), {
      maxBytes: MAX_RELEASE_FILE_BYTES,
      what: "latest pointer",
    });
    text = bytes.toString("utf8").trim();
  } catch (err) {
    if (err instanceof NotFoundError) return null;
    throw err;
  }
  const revision = Number(text);
  if (!Number.isSafeInteger(revision) || revision < 1) {
    throw new ReleaseError(
      `Cannot read ${reader.describe(latestPath(name))}: "${text}" is not a revision number`,
    );
  }
  return revision;
}
