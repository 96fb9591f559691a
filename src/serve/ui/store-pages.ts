// The dashboard's images and cache pages: releases of each image entry (roll-back when write
// actions are on), live ISO entries and their checks, the cache, mirrors and offline readiness.
import { formatBytes } from "../../lib/format.ts";
import type { MirrorStats } from "../../block/mirror-set.ts";
import type { ListedRelease } from "../../store/list.ts";
import { code, codes, good, html, page, table, time, writeForm, yes } from "./html.ts";
import type { Html } from "./html.ts";

export interface ImageView {
  entry: string;
  source: string;
  stores: string[];
  /** The release digest pinned from the dashboard, if any. */
  pinned: string | null;
  /** The release the server has open (label), if any. */
  open: string | null;
  /** What the open release boots, when the entry takes the kernel from the image (once known). */
  boot: {
    kernelPath: string;
    version?: string;
    cmdline: string;
    nbdRoot: string;
    rootSpec?: string;
    from: string;
    nbdClient?: string;
  } | null;
  releases: ListedRelease[] | null;
  error: string | null;
}

export interface IsoView {
  entry: string;
  iso: string;
  family: string | null;
  cachedBytes: number | null;
  size: number | null;
  /** Lazily (the ISO over NBD) or downloaded by the machine, and why (null: not opened). */
  boot: { lazy: true; hook: string | null } | { lazy: false; why: string } | null;
  /** Bytes machines read (NBD and HTTP), bytes the origin sent, a download recipe's copy. */
  readBytes: number | null;
  originBytes: number | null;
  downloadBytes: number | null;
  /** What the whole ISO is checked against before it boots. */
  check:
    | { kind: "sha256"; sha256: string }
    | { kind: "signed-list"; list: string }
    | { kind: "signature"; url: string }
    | { kind: "own-list" };
  state:
    | { kind: "open" }
    | { kind: "opening"; percent: number | null }
    | { kind: "failed"; error: string }
    | { kind: "not-opened" };
}

function isoCheck(c: IsoView["check"]): Html {
  if (c.kind === "sha256") return html`SHA-256 ${code(c.sha256.slice(0, 16))}…`;
  if (c.kind === "signed-list")
    return html`SHA-256 from the signed list <span class="mono">${c.list}</span>`;
  if (c.kind === "signature")
    return html`the publisher's signature <span class="mono">${c.url}</span>`;
  return html`<span class="muted">kernel and initrd by the ISO's own checksum list only</span>`;
}

function isoBoot(b: IsoView["boot"]): Html | string {
  if (!b) return "—";
  if (b.lazy) return b.hook ? `lazily (NBD, ${b.hook} overlay)` : "lazily (NBD, its own hook)";
  return html`<span class="muted">downloaded: ${b.why}</span>`;
}

const bytesOrDash = (n: number | null): string => (n === null ? "—" : formatBytes(n));

function isoState(s: IsoView["state"]): Html | string {
  if (s.kind === "open") return "open";
  if (s.kind === "opening")
    return s.percent === null ? "opening…" : `checking the whole ISO: ${s.percent}%`;
  if (s.kind === "failed") return html`<span class="bad">refused: ${s.error}</span>`;
  return html`<span class="muted">not opened yet</span>`;
}

/** A write action's form: hidden fields, the token, a button. */
function pinForm(entry: string, release: string, label: string): Html {
  return writeForm(`/ui/images/${encodeURIComponent(entry)}/pin`, { release }, label);
}

function releaseRows(v: ImageView, write: boolean): Html[] {
  const name = v.source.replace(/@.*$/, "");
  return (v.releases ?? [])
    .filter((r) => r.name === name)
    .map((r) => {
      const signature = r.problem
        ? html`<span class="bad">${r.problem}</span>`
        : good(r.verified, "verified", "not verified");
      const using = v.open === `${r.name}@${r.revision}` ? html` <strong>(in use)</strong>` : "";
      const pinned = r.digest && v.pinned === r.digest ? html` <strong>(pinned)</strong>` : "";
      const action = write && r.digest ? pinForm(v.entry, r.digest, "Boot this release") : "";
      return html`<tr>
        <td class="num">${r.revision}${using}${pinned}</td>
        <td>${time(r.created ?? undefined)}</td>
        <td class="num">${formatBytes(r.size ?? 0)}</td>
        <td class="num">${r.storedBytes === null ? "—" : formatBytes(r.storedBytes)}</td>
        <td class="num">
          ${r.sharedWithPrevious === null ? "—" : formatBytes(r.sharedWithPrevious)}
        </td>
        <td class="mono">${r.signer ?? "unsigned"}</td>
        <td>${signature}</td>
        <td>${yes(r.profile)}</td>
        <td>${yes(r.pack)}</td>
        <td class="mono wide">${r.digest?.slice(0, 16) ?? ""}</td>
        <td>${action}</td>
      </tr>`;
    });
}

export function imagesPage(images: ImageView[], isos: IsoView[], write: boolean): string {
  const sections = images.map(
    (v) =>
      html`<h2>Entry ${code(v.entry)}: image ${code(v.source)}</h2>
        <p>
          Store${v.stores.length > 1 ? "s (mirrors)" : ""}: ${codes(v.stores)}.
          ${v.open ? html`Open: <strong>${v.open}</strong>.` : html`<span class="muted">Not opened yet (the first boot opens it).</span>`}
          ${v.pinned ? html`Pinned from the dashboard to ${code(v.pinned.slice(0, 16))}.` : ""}
        </p>
        ${
          v.boot
            ? html`<p>
                Boots its own kernel
                ${code(v.boot.kernelPath)}${v.boot.version ? ` (Linux ${v.boot.version})` : ""},
                from ${v.boot.from}; command line ${code(v.boot.cmdline || "—")}; root
                ${code(v.boot.rootSpec ?? "—")} as ${code(v.boot.nbdRoot)}; NBD by
                ${v.boot.nbdClient ? html`its initrd's ${code(v.boot.nbdClient)}` : "inetboot's overlay"}.
              </p>`
            : ""
        }
        ${v.error ? html`<p class="bad">Cannot list the store: ${v.error}</p>` : ""}
        ${write && v.pinned ? pinForm(v.entry, "latest", "Follow the latest release again") : ""}
        ${table(
          [
            "Revision",
            "Created",
            "Size",
            "Stored",
            "Shared with previous",
            "Signer",
            "Signature",
            "Boot profile",
            "Boot pack",
            { label: "Digest", wide: true },
            write ? "Roll back" : "",
          ],
          releaseRows(v, write),
          { empty: `No releases of ${v.source.replace(/@.*$/, "")} in the store.` },
        )}`,
  );
  const isoRows = isos.map(
    (i) =>
      html`<tr>
        <td>${code(i.entry)}</td>
        <td class="mono">${i.iso}</td>
        <td>${i.family ?? "—"}</td>
        <td>${isoCheck(i.check)}</td>
        <td>${isoState(i.state)}</td>
        <td>${isoBoot(i.boot)}</td>
        <td class="num">
          ${i.cachedBytes === null ? "—" : `${formatBytes(i.cachedBytes)} of ${formatBytes(i.size ?? 0)}`}
        </td>
        <td class="num">${bytesOrDash(i.readBytes)}</td>
        <td class="num">${bytesOrDash(i.originBytes)}</td>
        <td class="num">${bytesOrDash(i.downloadBytes)}</td>
      </tr>`,
  );
  const note = write
    ? html`<p class="muted">
        Write actions are on: rolling back needs the token from the configuration
        (${code("ui.token")}).
      </p>`
    : html`<p class="muted">
        Roll-back from this page is off (set ${code("ui: { write: true, token: … }")} in the
        configuration to turn it on).
      </p>`;
  return page(
    "Images",
    "/ui/images",
    html`<h1>Images</h1>
      ${note}
      ${images.length || isos.length ? "" : html`<p>No image or ISO entries are configured.</p>`}
      ${sections}
      ${
        isos.length
          ? html`<h2>Live ISOs</h2>
              ${table(
                [
                  "Entry",
                  "ISO",
                  "Family",
                  "Checked against",
                  "State",
                  "Boots",
                  "Cached",
                  "Read by machines",
                  "From the origin",
                  "RAM per machine if downloaded",
                ],
                isoRows,
                { empty: "" },
              )}`
          : ""
      }`,
  );
}

export interface CacheView {
  dir: string;
  bytes: number | null;
  chunks: number | null;
  /** ISO and raw image block caches in the same folder and quota. */
  blockCaches: { bytes: number; count: number } | null;
  quotaBytes: number | null;
  hits: number;
  misses: number;
  offline: {
    entry: string;
    release: string;
    needed: number;
    missing: number;
    bytesMissing: number;
    basis: string;
    /** Why it cannot be judged (nothing cached). */
    problem: string | null;
  }[];
  mirrors: (MirrorStats & { entry: string })[];
  isos: {
    entry: string;
    hits: number;
    misses: number;
    fetchedBytes: number;
    cachedBytes: number;
    repaired: number;
    unkeptBytes: number;
  }[];
}

export function cachePage(v: CacheView): string {
  const lookups = v.hits + v.misses;
  const offline = v.offline.map(
    (o) =>
      html`<tr>
        <td>${code(o.entry)}</td>
        <td>${o.release}</td>
        <td>${good(o.missing === 0 && !o.problem, "yes", "no")}</td>
        <td class="num">
          ${
            o.problem ??
            (o.missing
              ? `${o.missing} of ${o.needed} chunks (${formatBytes(o.bytesMissing)})`
              : "—")
          }
        </td>
        <td>${o.basis}</td>
      </tr>`,
  );
  const mirrors = v.mirrors.map(
    (m) =>
      html`<tr>
        <td>${code(m.entry)}</td>
        <td class="mono">${m.location}</td>
        <td>${good(m.healthy, "healthy", "failing")}</td>
        <td class="num">${m.latencyMs === null ? "—" : `${m.latencyMs.toFixed(1)} ms`}</td>
        <td class="num">${m.requests}</td>
        <td class="num">${m.failures}</td>
        <td class="num">${m.failovers}</td>
        <td class="wide">${m.lastError ?? ""}</td>
      </tr>`,
  );
  const isos = v.isos.map(
    (i) =>
      html`<tr>
        <td>${code(i.entry)}</td>
        <td class="num">${formatBytes(i.cachedBytes)}</td>
        <td class="num">${formatBytes(i.fetchedBytes)}</td>
        <td class="num">${i.hits}</td>
        <td class="num">${i.misses}</td>
        <td class="num">${i.repaired}</td>
        <td class="num">${i.unkeptBytes ? formatBytes(i.unkeptBytes) : "—"}</td>
      </tr>`,
  );
  return page(
    "Cache and mirrors",
    "/ui/cache",
    html`<h1>Cache and mirrors</h1>
      <h2>Cache</h2>
      <dl>
        <dt>Folder</dt>
        <dd>${code(v.dir)}</dd>
        <dt>Size</dt>
        <dd>
          ${v.bytes === null ? "— (no image opened yet)" : `${formatBytes(v.bytes)} in ${v.chunks ?? 0} chunks`}
          ${v.blockCaches?.count ? `and ${v.blockCaches.count} ISO or raw image block caches (${formatBytes(v.blockCaches.bytes)} of it)` : ""}
        </dd>
        <dt>Quota</dt>
        <dd>${v.quotaBytes === null ? "—" : formatBytes(v.quotaBytes)}</dd>
        <dt>Hit rate</dt>
        <dd>
          ${lookups ? `${((100 * v.hits) / lookups).toFixed(1)}% (${v.hits} hits, ${v.misses} misses)` : "no lookups yet"}
        </dd>
      </dl>
      <h2>Offline boot</h2>
      ${table(["Entry", "Release", "Can boot offline", "Missing", "Judged by"], offline, {
        empty: "No image opened yet.",
      })}
      <h2>Mirrors</h2>
      ${table(
        [
          "Entry",
          "Mirror",
          "Health",
          "Latency",
          "Requests",
          "Failures",
          "Failovers",
          { label: "Last error", wide: true },
        ],
        mirrors,
        { empty: "No image opened yet." },
      )}
      ${
        isos.length
          ? html`<h2>ISO block caches</h2>
              ${table(["Entry", "Cached", "Fetched", "Blocks read from cache", "Blocks fetched", "Repaired", "Not kept (quota full)"], isos, { empty: "" })}`
          : ""
      }`,
  );
}
