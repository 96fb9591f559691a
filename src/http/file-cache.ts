// Remote kernels and initrds: fetched once over http(s), hash-checked (against the configured
// SHA-256 when there is one), kept on disk, re-verified once per server run, never re-downloaded
// per boot. Concurrent boots of the same file share one download.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable, Transform } from "node:stream";
import { silentLogger } from "../lib/log.ts";
import type { Logger } from "../lib/log.ts";
import { isErrno, tempPathFor, writeFileAtomic } from "../lib/atomic-file.ts";

export interface CachedFile {
  path: string;
  size: number;
  sha256: string;
}

export class RemoteFileError extends Error {}

interface Meta {
  url: string;
  sha256: string;
  size: number;
  fetched: string;
}

export async function hashFile(path: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(path), h);
  return h.digest("hex");
}

export class RemoteFileCache {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #ready = new Map<string, Promise<CachedFile>>();

  constructor(dir: string, logger: Logger = silentLogger) {
    this.#dir = dir;
    this.#log = logger;
  }

  /** The local copy of `url`, downloading it the first time. */
  get(url: string, sha256?: string): Promise<CachedFile> {
    const key = `${url}#${sha256 ?? ""}`;
    let p = this.#ready.get(key);
    if (!p) {
      p = this.#load(url, sha256);
      this.#ready.set(key, p);
      // A failure is not cached: the next boot tries again.
      p.catch(() => this.#ready.delete(key));
    }
    return p;
  }

  async #load(url: string, sha256?: string): Promise<CachedFile> {
    const id = createHash("sha256").update(url).digest("hex").slice(0, 32);
    const dataPath = join(this.#dir, `${id}.data`);
    const metaPath = join(this.#dir, `${id}.json`);
    try {
      const meta = JSON.parse(await readFile(metaPath, "utf8")) as Meta;
      const st = await stat(dataPath);
      if (meta.url === url && st.size === meta.size && (!sha256 || sha256 === meta.sha256)) {
        if ((await hashFile(dataPath)) === meta.sha256) {
          return { path: dataPath, size: meta.size, sha256: meta.sha256 };
        }
        this.#log.warn({ url, path: dataPath }, "cached remote file is corrupt; fetching it again");
      }
    } catch (err) {
      if (!isErrno(err, "ENOENT") && !(err instanceof SyntaxError)) throw err;
    }
    await mkdir(this.#dir, { recursive: true });
    const started = Date.now();
    const res = await fetch(url, { redirect: "follow" }).catch((err: unknown) => {
      throw new RemoteFileError(`GET ${url} failed: ${(err as Error).message}`);
    });
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel();
      throw new RemoteFileError(`GET ${url} answered ${res.status}; check the URL in the entry`);
    }
    const tmp = tempPathFor(dataPath);
    const hash = createHash("sha256");
    let size = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline(Readable.fromWeb(res.body), tap, createWriteStream(tmp));
      const digest = hash.digest("hex");
      if (sha256 && digest !== sha256) {
        throw new RemoteFileError(
          `${url} has SHA-256 ${digest}, not the configured ${sha256}: refusing to serve it`,
        );
      }
      await rename(tmp, dataPath);
      const meta: Meta = { url, sha256: digest, size, fetched: new Date().toISOString() };
      await writeFileAtomic(metaPath, JSON.stringify(meta) + "\n");
      this.#log.info(
        { url, bytes: size, ms: Date.now() - started, sha256: digest },
        "remote file cached",
      );
      return { path: dataPath, size, sha256: digest };
    } finally {
      await rm(tmp, { force: true });
    }
  }
}
