// Reading the configuration file again into a running server: on SIGHUP, when the file
// changes, or from the API. One reload at a time; the file is read and checked exactly as
// `inetboot serve --check` does; a file with problems (or a change that needs a restart) is
// refused, recorded, and the running configuration stays.
import { loadConfig } from "./config.ts";
import type { ServeConfig } from "./config.ts";
import { ConfigError } from "./config/types.ts";
import { changesText } from "./config-diff.ts";
import type { ConfigChanges } from "./config-diff.ts";

export interface Reloadable {
  reload(next: ServeConfig): Promise<ConfigChanges>;
  reloadRefused(source: string, problems: string[]): void;
}

export class ConfigReloader {
  readonly #path: string;
  readonly #server: Reloadable;
  readonly #adjust: (c: ServeConfig) => void;
  #chain: Promise<unknown> = Promise.resolve();

  /** `adjust`: what the command line overrides (--http-port), applied to each new one. */
  constructor(path: string, server: Reloadable, adjust: (c: ServeConfig) => void = () => {}) {
    this.#path = path;
    this.#server = server;
    this.#adjust = adjust;
  }

  get path(): string {
    return this.#path;
  }

  /** Resolves once no reload is running (before the server stops). */
  idle(): Promise<void> {
    return this.#chain.then(() => undefined);
  }

  /** Reloads; resolves with what changed, rejects with the problems (already recorded). */
  reload(): Promise<string> {
    const run = this.#chain.then(async () => {
      try {
        const next = await loadConfig(this.#path);
        this.#adjust(next);
        return changesText(await this.#server.reload(next));
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
        this.#server.reloadRefused(this.#path, problems);
        throw new Error(problems.join("\n"), { cause: err });
      }
    });
    this.#chain = run.catch(() => undefined);
    return run;
  }
}
