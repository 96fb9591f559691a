// The dashboard's pages: machines (live), one machine's boot timeline (live), the catalog as
// configured, images and releases (with roll-back when write actions are on), cache and mirrors.
// Everything is rendered on the server and readable without JavaScript; a few lines of script
// subscribe to /api/events/stream for live updates.
import { formatBytes } from "../../lib/format.ts";
import type { MirrorStats } from "../../block/mirror-set.ts";
import type { ListedRelease } from "../../store/list.ts";
import type { Entry, ServeConfig } from "../config.ts";
import { kindOf } from "../entries/index.ts";
import type { BootEvent, MachineRecord } from "../events.ts";
import type { Choice } from "../plan.ts";
import { code, codes, emptyRow, html, page, table, time } from "./html.ts";
import type { Html } from "./html.ts";

export type MachineRow = MachineRecord & { next: Choice & { once?: string } };

function firmware(m: MachineRecord): Html {
  const f = m.firmware;
  const parts: string[] = [];
  if (f) parts.push(f.description);
  if (f?.ipxe || m.ipxe !== undefined) {
    const arch = [m.ipxe?.platform, m.ipxe?.buildarch].filter(Boolean).join(" ");
    parts.push(`iPXE${arch ? ` (${arch})` : ""}`);
  }
  if (f?.http) parts.push("HTTP Boot");
  return parts.length ? html`${parts.join(", ")}` : html`<span class="muted">unknown</span>`;
}

function nextText(m: MachineRow): Html {
  const once = m.next.once ? html` <span class="muted">(one-shot ${m.next.once} used)</span>` : "";
  return html`${m.next.entry}${once}`;
}

const yes = (v: boolean): string => (v ? "yes" : "no");
const good = (ok: boolean, yesText: string, noText: string): Html =>
  ok ? html`<span class="good">${yesText}</span>` : html`<span class="bad">${noText}</span>`;

const MACHINE_COLUMNS = [
  "MAC",
  "Host name",
  "Firmware",
  "IP",
  "Last stage",
  "When",
  "Boots next",
  { label: "Why", wide: true },
];

/** The rows of the machines table (also sent alone for live refreshes). */
export function machineRows(rows: MachineRow[]): Html {
  if (rows.length === 0) {
    return emptyRow(MACHINE_COLUMNS.length, "No machine has asked to boot yet.");
  }
  return html`${rows.map(
    (m) =>
      html`<tr>
        <td><a class="mono" href="/ui/machines/${encodeURIComponent(m.mac)}">${m.mac}</a></td>
        <td>${m.hostname ?? ""}</td>
        <td>${firmware(m)}</td>
        <td class="mono">${m.ip ?? ""}</td>
        <td>${m.lastStage}</td>
        <td>${time(m.lastSeen)}</td>
        <td>${nextText(m)}</td>
        <td class="wide">${m.next.rule}</td>
      </tr>`,
  )}`;
}

/** Re-renders the machines table (server-escaped rows) whenever an event arrives. */
const LIVE_TABLE = `
(function () {
  var status = document.getElementById("live");
  if (!window.EventSource) return;
  var es = new EventSource("/api/events/stream");
  var pending = false;
  es.onopen = function () { status.textContent = "Live: updates as machines boot."; };
  es.onerror = function () { status.textContent = "Live updates interrupted; retrying…"; };
  es.onmessage = function () {
    if (pending) return;
    pending = true;
    setTimeout(function () {
      fetch("/ui/machines?part=rows").then(function (r) { return r.text(); }).then(function (t) {
        document.getElementById("machines-body").innerHTML = t;
        status.textContent = "Live: updated " + new Date().toLocaleTimeString() + ".";
        pending = false;
      }, function () { pending = false; });
    }, 200);
  };
})();
`;

export function machinesPage(rows: MachineRow[]): string {
  const body = machineRows(rows);
  return page(
    "Machines",
    "/ui/machines",
    html`<h1>Machines</h1>
      <p id="live" class="live" aria-live="polite">
        ${rows.length} machine(s) seen since the server started.
      </p>
      ${table(MACHINE_COLUMNS, [body], {
        empty: "",
        body: { id: "machines-body" },
        caption: "Each machine's last boot stage and what it boots next",
      })}`,
    LIVE_TABLE,
  );
}

/** Appends each new event of this machine to the timeline, built with textContent (no markup). */
const LIVE_TIMELINE = `
(function () {
  var body = document.getElementById("timeline");
  var status = document.getElementById("live");
  if (!window.EventSource) return;
  var url = "/api/events/stream?mac=" + encodeURIComponent(body.dataset.mac) + "&since=" + body.dataset.since;
  var es = new EventSource(url);
  es.onopen = function () { status.textContent = "Live: new stages appear as they happen."; };
  es.onerror = function () { status.textContent = "Live updates interrupted; retrying…"; };
  es.onmessage = function (m) {
    var e = JSON.parse(m.data);
    var empty = document.getElementById("no-events");
    if (empty) empty.remove();
    var tr = document.createElement("tr");
    [e.seq, e.time, e.stage, e.entry || "", e.file || "", e.bytes === undefined ? "" : e.bytes + " B", e.detail || ""].forEach(function (v, i) {
      var td = document.createElement("td");
      td.textContent = String(v);
      if (i === 0 || i === 5) td.className = "num";
      tr.appendChild(td);
    });
    body.appendChild(tr);
    document.getElementById("last-stage").textContent = e.stage;
    status.textContent = "Live: " + e.stage + " at " + e.time;
  };
})();
`;

const TIMELINE_COLUMNS = ["#", "Time", "Stage", "Entry", "File", "Bytes", "Detail"];

export function machinePage(
  mac: string,
  machine: MachineRow | undefined,
  events: BootEvent[],
  /** The image entry whose disk (overlay) this machine may reset from here, if any. */
  resettable: string | null = null,
  /** The older release its per-machine disk keeps it on, if not the entry's current one. */
  staysOn: string | null = null,
): string {
  const reset = resettable
    ? html`<h2>Disk</h2>
        ${staysOn ? html`<p><strong>Its disk was made on ${code(staysOn)}, so it keeps booting that release</strong>: a newer (or rolled-back) one cannot sit under blocks written over another. Reset the disk to move it to the entry's current release.</p>` : ""}
        <p>
          The machine boots image entry ${code(resettable)}. Resetting discards what it wrote to its
          disk; its next boot starts from the image as published (a machine still running loses its
          disk).
        </p>
        ${writeForm(`/ui/machines/${encodeURIComponent(mac)}/reset-disk`, { entry: resettable }, "Reset this machine's disk")}`
    : "";
  const details = machine
    ? html`<dl>
        <dt>MAC</dt>
        <dd class="mono">${machine.mac}</dd>
        <dt>Host name</dt>
        <dd>${machine.hostname ?? "—"}</dd>
        <dt>UUID</dt>
        <dd class="mono">${machine.uuid ?? "—"}</dd>
        <dt>Firmware</dt>
        <dd>${firmware(machine)}</dd>
        <dt>IP</dt>
        <dd class="mono">${machine.ip ?? "—"}</dd>
        <dt>Last stage</dt>
        <dd><span id="last-stage">${machine.lastStage}</span> · ${time(machine.lastSeen)}</dd>
        <dt>First seen</dt>
        <dd>${time(machine.firstSeen)}</dd>
        <dt>Boots next</dt>
        <dd>${nextText(machine)} — ${machine.next.rule}</dd>
      </dl>`
    : html`<p>
          This machine has not been seen since the server started. Its stages appear here as it
          boots.
        </p>
        <p class="muted">Last stage: <span id="last-stage">—</span></p>`;
  const rows = events.map(
    (e) =>
      html`<tr>
        <td class="num">${e.seq}</td>
        <td>${time(e.time)}</td>
        <td>${e.stage}</td>
        <td>${e.entry ?? ""}</td>
        <td class="mono">${e.file ?? ""}</td>
        <td class="num">${e.bytes === undefined ? "" : formatBytes(e.bytes)}</td>
        <td>${e.detail ?? ""}</td>
      </tr>`,
  );
  return page(
    `Machine ${mac}`,
    "/ui/machines",
    html`<h1>Machine <span class="mono">${mac}</span></h1>
      ${details} ${reset}
      <h2>Boot timeline</h2>
      <p id="live" class="live" aria-live="polite">${events.length} event(s).</p>
      ${table(
        TIMELINE_COLUMNS,
        rows.length ? rows : [emptyRow(TIMELINE_COLUMNS.length, "No events yet.", "no-events")],
        {
          empty: "",
          body: { id: "timeline", "data-mac": mac, "data-since": String(events.at(-1)?.seq ?? 0) },
        },
      )}`,
    LIVE_TIMELINE,
  );
}

function entryWhat(e: Entry): Html | string {
  return kindOf(e).describe(e);
}

function matchText(m: ServeConfig["machines"][number]["match"]): string {
  const parts: string[] = [];
  if (m.mac) parts.push(`mac ${m.mac}`);
  if (m.uuid) parts.push(`uuid ${m.uuid}`);
  if (m.hostname) parts.push(`hostname ${m.hostname}`);
  if (m.arch) parts.push(`arch ${m.arch}`);
  for (const [k, v] of Object.entries(m.labels ?? {})) parts.push(`label ${k}=${v}`);
  return parts.join(", ") || "everything";
}

export function catalogPage(config: ServeConfig): string {
  const warnings = config.warnings.length
    ? html`<h2>Problems found in the configuration</h2>
        <ul>
          ${config.warnings.map((w) => html`<li class="bad">${w}</li>`)}
        </ul>`
    : html`<p class="good">No problems found in the configuration.</p>`;
  const entries = [...config.entries.values()].map(
    (e) =>
      html`<tr>
        <td>${code(e.name)}</td>
        <td>${e.kind}</td>
        <td>${e.title}</td>
        <td>${entryWhat(e)}</td>
        <td>${e.once ? "yes" : ""}</td>
      </tr>`,
  );
  const rules = config.machines.map(
    (r) =>
      html`<tr>
        <td>${r.name}</td>
        <td>${matchText(r.match)}</td>
        <td>${code(r.boot)}</td>
        <td class="num">${r.line || ""}</td>
      </tr>`,
  );
  return page(
    "Catalog",
    "/ui/catalog",
    html`<h1>Catalog</h1>
      <p>
        Configuration: ${code(config.source)}. Machines no rule matches boot
        <strong>${config.default}</strong>.
      </p>
      ${warnings}
      <h2>Entries</h2>
      ${table(["Name", "Kind", "Title", "Boots", "Once"], entries, { empty: "No entries." })}
      <h2>Matching rules</h2>
      <p class="muted">
        The most specific matching rule wins: MAC or UUID over host name over labels over
        architecture; ties go to the rule written first.
      </p>
      ${table(["Rule", "Matches", "Boots", "Line"], rules, {
        empty: `No rules: every machine boots ${config.default}.`,
      })}`,
  );
}

export interface ImageView {
  entry: string;
  source: string;
  stores: string[];
  /** The release digest pinned from the dashboard, if any. */
  pinned: string | null;
  /** The release the server has open (label), if any. */
  open: string | null;
  releases: ListedRelease[] | null;
  error: string | null;
}

export interface IsoView {
  entry: string;
  iso: string;
  family: string | null;
  cachedBytes: number | null;
  size: number | null;
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

function isoState(s: IsoView["state"]): Html | string {
  if (s.kind === "open") return "open";
  if (s.kind === "opening")
    return s.percent === null ? "opening…" : `checking the whole ISO: ${s.percent}%`;
  if (s.kind === "failed") return html`<span class="bad">refused: ${s.error}</span>`;
  return html`<span class="muted">not opened yet</span>`;
}

/** A write action's form: hidden fields, the token, a button. */
function writeForm(action: string, hidden: Record<string, string>, label: string): Html {
  return html`<form class="inline" method="post" action="${action}">
    ${Object.entries(hidden).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}" />`)}
    <label
      >Token <input type="password" name="token" autocomplete="off" required size="10"
    /></label>
    <button type="submit">${label}</button>
  </form>`;
}

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
        <td class="num">
          ${i.cachedBytes === null ? "—" : `${formatBytes(i.cachedBytes)} of ${formatBytes(i.size ?? 0)}`}
        </td>
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
              ${table(["Entry", "ISO", "Family", "Checked against", "State", "Cached"], isoRows, {
                empty: "",
              })}`
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
