// The former home of the store interfaces and their factory, kept while callers move over:
// the interfaces are in store.ts, openStore and isUrl in open-store.ts. Import from those.
export type { ReadOptions, StoreReader } from "./store.ts";
export { isUrl, openStore, openStoreReader } from "./open-store.ts";
