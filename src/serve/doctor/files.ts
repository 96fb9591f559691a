// The doctor's file checks: the first stages the loaders point to, each entry's files (host
// paths readable, http(s) URLs answering — a bounded number, a few at a time), the cache
// folder's quota against the free disk space, and the state folder writable.
import { constants } from "node:fs";
import { access, mkdtemp, rm, stat, statfs } from "node:fs/promises";
import { dirname, join } from "node:path";
import { DEFAULT_CACHE_QUOTA, readCacheSettings } from "../../block/chunk-cache.ts";
import { formatBytes } from "../../lib/format.ts";
import type { Entry, FileRef, ServeConfig } from "../config.ts";
import { fail, mapLimited, MAX_URL_PROBES, ok, PROBE_CONCURRENCY, warn } from "./check.ts";
import type { Check, Prober } from "./check.ts";

/** Why `path` cannot be served (missing, not a file, unreadable, empty), or null. */
async function unreadable(path: string): Promise<string | null> {
  const s = await stat(path).catch(() => null);
  if (!s) return `${path} does not exist`;
  if (!s.isFile()) return `${path} is not a file`;
  if (s.size === 0) return `${path} is empty`;
  return access(path, constants.R_OK).then(
    () => null,
    () => `${path} is not readable by this user`,
  );
}

/** The iPXE first stages, and the shim and GRUB files any firmware or rule is handed. */
export async function firstStageChecks(config: ServeConfig): Promise<Check[]> {
  const files: [string, string, string][] = [];
  const pxe = config.dhcp.mode !== "off" || config.tftp.enabled;
  if (pxe) {
    for (const [key, path] of Object.entries(config.tftp.firstStages))
      files.push([`first stage ${key}`, path, `tftp.firstStages.${key}`]);
  }
  const used = new Set<string>([
    ...Object.values(config.loaders.defaults),
    ...config.machines.flatMap((m) => (m.loader ? [m.loader] : [])),
  ]);
  for (const kind of ["shim", "grub"] as const) {
    if (!used.has(kind) && !(kind === "grub" && used.has("shim"))) continue;
    for (const [cpu, path] of Object.entries(config.loaders[kind]))
      files.push([`loader ${kind} ${cpu}`, path, `loaders.${kind}.${cpu}`]);
  }
  const out: Check[] = [];
  if (pxe && !config.tftp.firstStages.bios && !config.tftp.firstStages["uefi-x86_64"])
    out.push(
      fail(
        "first stages",
        "no iPXE first stage found (looked in /usr/lib/ipxe and /usr/share/ipxe)",
        "apt install ipxe, or set tftp.firstStages.bios / uefi-x86_64",
      ),
    );
  for (const [name, path, setting] of files) {
    const why = await unreadable(path);
    out.push(why ? fail(name, why, `install its package or fix ${setting}`) : ok(name, path));
  }
  return out;
}

/** [check name, location, setting] of every file and URL an entry serves or points to. */
function entryFiles(e: Entry): [string, string, string][] {
  const p = `entries.${e.name}`;
  const ref = (r: FileRef): string => r.url ?? r.path ?? "";
  const out: [string, string, string][] = [];
  if (e.kind === "kernel" || e.kind === "image") {
    if (e.kernel) out.push([`entry ${e.name} kernel`, ref(e.kernel), `${p}.kernel`]);
    e.initrd.forEach((r, i) =>
      out.push([`entry ${e.name} initrd[${i}]`, ref(r), `${p}.initrd[${i}]`]),
    );
  } else if (e.kind === "iso") {
    out.push([`entry ${e.name} iso`, e.iso, `${p}.iso`]);
  } else if ((e.kind === "chain" || e.kind === "sanboot") && /^https?:\/\//i.test(e.url)) {
    out.push([`entry ${e.name} ${e.kind}`, e.url, `${p}.${e.kind}`]);
  }
  return out;
}

export async function entryFileChecks(config: ServeConfig, prober: Prober): Promise<Check[]> {
  const files = [...config.entries.values()].flatMap(entryFiles);
  const urls = files.filter(([, where]) => /^https?:\/\//i.test(where));
  const probed = urls.slice(0, MAX_URL_PROBES);
  const answers = new Map<string, Awaited<ReturnType<Prober["reachable"]>>>();
  const unique = [...new Set(probed.map(([, u]) => u))];
  const results = await mapLimited(unique, PROBE_CONCURRENCY, (u) => prober.reachable(u));
  unique.forEach((u, i) => answers.set(u, results[i]));
  const out: Check[] = [];
  for (const [name, where, setting] of files) {
    if (!/^https?:\/\//i.test(where)) {
      const why = await unreadable(where);
      out.push(why ? fail(name, why, `put the file there or fix ${setting}`) : ok(name, where));
      continue;
    }
    const a = answers.get(where);
    if (!a) {
      out.push(
        warn(name, `${where} not checked`, `at most ${MAX_URL_PROBES} URLs are probed a run`),
      );
      continue;
    }
    if (a.status === null) {
      out.push(
        fail(name, `${where}: ${a.error}`, `make it reachable from this host or fix ${setting}`),
      );
    } else if (a.status >= 400) {
      out.push(
        fail(name, `${where} answers ${a.status}`, `fix ${setting} (the URL is wrong or gone)`),
      );
    } else {
      const redirect = a.location ? ` → ${a.location}` : "";
      out.push(ok(name, `${where} answers ${a.status}${redirect}`));
    }
  }
  return out;
}

/** The nearest folder of `path` that exists (a folder to be made is made in it). */
async function existingAncestor(path: string): Promise<string> {
  for (let p = path; ; p = dirname(p)) {
    if (
      await stat(p).then(
        (s) => s.isDirectory(),
        () => false,
      )
    )
      return p;
    if (dirname(p) === p) return p;
  }
}

/** The state folder is writable: a file is made in it and removed (or its parent is writable). */
export async function stateCheck(config: ServeConfig): Promise<Check> {
  const dir = config.stateDir;
  const name = "state folder";
  const exists = await stat(dir).then(
    (s) => s.isDirectory(),
    () => false,
  );
  try {
    if (exists) {
      const probe = await mkdtemp(join(dir, ".doctor-"));
      await rm(probe, { recursive: true, force: true });
      return ok(name, `${dir} is writable`);
    }
    const parent = await existingAncestor(dir);
    await access(parent, constants.W_OK);
    return ok(name, `${dir} does not exist yet; the server makes it in ${parent}`);
  } catch (err) {
    return fail(
      name,
      `${dir} is not writable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      `run the server as a user who may write it, or set state: to a writable folder`,
    );
  }
}

/** The cache's quota (cache.json, else the default) against the free space on its disk. */
export async function cacheCheck(config: ServeConfig): Promise<Check> {
  const dir = config.cacheDir;
  const quota = readCacheSettings(dir).quotaBytes ?? DEFAULT_CACHE_QUOTA;
  const on = await existingAncestor(dir);
  const fs = await statfs(on).catch(() => null);
  if (!fs) return warn("cache folder", `cannot read the free space of ${on}`, "check the mount");
  const free = fs.bavail * fs.bsize;
  const detail = `${dir}: quota ${formatBytes(quota)}, ${formatBytes(free)} free on its disk`;
  if (free < quota)
    return warn(
      "cache folder",
      `${detail} (what the cache holds already counts toward the quota)`,
      `free space, or lower the quota (kept in ${join(dir, "cache.json")}; --cache-quota SIZE of inetboot attach or run sets it)`,
    );
  return ok("cache folder", detail);
}
