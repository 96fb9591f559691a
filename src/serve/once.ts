// One-shot entries: a machine boots a `once: true` entry a single time, then `local`. The state
// (MAC → entries already booted) is a small JSON file in the server's state folder.
import { readFile } from "node:fs/promises";
import { isErrno, writeFileAtomic } from "../lib/atomic-file.ts";

export class OnceState {
  readonly #file: string;
  #done = new Map<string, Set<string>>();
  #writing: Promise<void> = Promise.resolve();

  private constructor(file: string) {
    this.#file = file;
  }

  static async open(file: string): Promise<OnceState> {
    const state = new OnceState(file);
    try {
      const data = JSON.parse(await readFile(file, "utf8")) as Record<string, string[]>;
      for (const [mac, entries] of Object.entries(data)) state.#done.set(mac, new Set(entries));
    } catch (err) {
      if (!isErrno(err, "ENOENT")) {
        throw new Error(
          `One-shot state ${file} is unreadable (${(err as Error).message}); remove it to reset`,
          { cause: err },
        );
      }
    }
    return state;
  }

  consumed(mac: string, entry: string): boolean {
    return this.#done.get(mac)?.has(entry) ?? false;
  }

  /** Marks the entry booted for this machine; resolves when that is on disk. */
  consume(mac: string, entry: string): Promise<void> {
    const set = this.#done.get(mac) ?? new Set<string>();
    if (set.has(entry)) return this.#writing;
    set.add(entry);
    this.#done.set(mac, set);
    return this.#save();
  }

  /** Lets the machine boot its one-shot entries again. */
  reset(mac: string): Promise<void> {
    this.#done.delete(mac);
    return this.#save();
  }

  #save(): Promise<void> {
    const write = (): Promise<void> => {
      const data = Object.fromEntries([...this.#done].map(([m, s]) => [m, [...s]]));
      return writeFileAtomic(this.#file, JSON.stringify(data, null, 1) + "\n");
    };
    this.#writing = this.#writing.then(write, write);
    return this.#writing;
  }
}
