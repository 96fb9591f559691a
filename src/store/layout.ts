// Where each kind of file lives in a store. A store is a tree of static files:
//   chunks/<first 4 hex>/<sha256>.cacnk   zstd-compressed chunks (a casync chunk store)
//   indexes/<sha256>.caibx               casync blob indexes, named by their own digest
//   releases/<NAME>/<REVISION>.json      signed release manifests (+ .minisig), immutable
//   releases/<NAME>/latest               the newest revision number (a small mutable pointer)
//   releases/index.json                  the images and revisions in the store, for HTTP listing

const HEX64 = /^[0-9a-f]{64}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export const CHUNKS_DIR = "chunks";
export const CATALOG_PATH = "releases/index.json";

export function isChunkId(id: string): boolean {
  return HEX64.test(id);
}

/** Image names are path segments: letters, digits, `.`, `_`, `+`, `-`, not starting with a dot. */
export function isImageName(name: string): boolean {
  return NAME.test(name);
}

/** A chunk's path relative to a chunk store (casync's layout). */
export function chunkFile(id: string): string {
  return `${id.slice(0, 4)}/${id}.cacnk`;
}

export function indexPath(digest: string): string {
  return `indexes/${digest}.caibx`;
}

export function releasePath(name: string, revision: number): string {
  return `releases/${name}/${revision}.json`;
}

export function latestPath(name: string): string {
  return `releases/${name}/latest`;
}
