// Opening a store by its location: an http(s):// URL is read over HTTP, anything else is a local
// folder. The one place that chooses an implementation; a new scheme (s3://, webdav://) is added
// here.
import { HttpStoreReader } from "./http-store.ts";
import type { HttpStoreOptions } from "./http-store.ts";
import { LocalStore } from "./local-store.ts";
import type { StoreReader } from "./store.ts";

export type OpenStoreOptions = HttpStoreOptions;

export function isUrl(text: string): boolean {
  return /^https?:\/\//i.test(text);
}

/**
 * Opens `location` (a directory or an http(s) URL) as a store. Every store can be read; check
 * what else it can do with isStoreWriter / isStorePruner, or requireWritable.
 */
export function openStore(location: string, options: OpenStoreOptions = {}): StoreReader {
  return isUrl(location) ? new HttpStoreReader(location, options) : new LocalStore(location);
}
