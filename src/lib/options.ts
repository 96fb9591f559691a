// Merging options objects: a key given as undefined means "use the default", not "unset".

/** `o` without the keys whose value is undefined, so that spreading it keeps the defaults. */
export function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
