// The dashboard's pages: machines (live), one machine's boot timeline (live), the catalog as
// configured, images and releases (with roll-back when write actions are on), cache and mirrors.
// Everything is rendered on the server and readable without JavaScript; a few lines of script
// subscribe to /api/events/stream for live updates.
import { formatBytes } from "../../cli/format.ts";
import type { MirrorStats } from "../../block/mirror-set.ts";
import type { ListedRelease } from "../../store/list.ts";
import type { Entry, ServeConfig } from "../config.ts";
import type { BootEvent, MachineRecord } from "../events.ts";
import type { Choice } from "../plan.ts";
import type { Html } from "./html.ts";
import { html, page, time } from "./html.ts";

export type MachineRow = MachineRecord & { next: Choice & { once?: string } };

function firmware(m: MachineRecord): Html {
  const f = m.firmware;
  const parts: string[] = [];
  if (f) parts.push(f.description);
  const ipxe = f?.ipxe || m.ipxe !== undefined;
  if (ipxe) {
    const arch = [m.ipxe?.platform, m.ipxe?.buildarch].filter(Boolean).join(" ");
    parts.push(`iPXE${arch ? ` (${arch})` : ""}`);
  }
  if (f?.http) parts.push("HTTP Boot");
  return parts.length ? html`${parts.join(", ")}` : html`<span class="muted">unknown</span>`;
}

function macLink(mac: string): Html {
  return html`<a class="mono" href="/ui/machines/${encodeURIComponent(mac)}">${mac}</a>`;
}

function nextText(m: MachineRow): Html {
  const once = m.next.once ? html` <span class="muted">(one-shot ${m.next.once} used)</span>` : "";
  return html`${m.next.entry}${once}`;
}

/** The rows of the machines table (also sent alone for live refreshes). */
export function machineRows(rows: MachineRow[]): Html {
  if (rows.length === 0) {
    return html`<tr>
      <td colspan="8" class="muted">No machine has asked to boot yet.</td>
    </tr>`;
  }
  return html`${rows.map(
    (m) =>
      html`<tr>
        <td>${macLink(m.mac)}</td>
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
  return page(
    "Machines",
    "/ui/machines",
    html`<h1>Machines</h1>
      <p id="live" class="live" aria-live="polite">
        ${rows.length} machine(s) seen since the server started.
      </p>
      <div class="table">
        <table>
          <caption class="muted" style="text-align:left;padding:4px 10px">
            Each machine's last boot stage and what it boots next
          </caption>
          <thead>
            <tr>
              <th scope="col">MAC</th>
              <th scope="col">Host name</th>
              <th scope="col">Firmware</th>
              <th scope="col">IP</th>
              <th scope="col">Last stage</th>
              <th scope="col">When</th>
              <th scope="col">Boots next</th>
              <th scope="col" class="wide">Why</th>
            </tr>
          </thead>
          <tbody id="machines-body">
            ${machineRows(rows)}
          </tbody>
        </table>
      </div>`,
    LIVE_TABLE,
  );
}

function eventRow(e: BootEvent): Html {
  return html`<tr>
    <td class="num">${e.seq}</td>
    <td>${time(e.time)}</td>
    <td>${e.stage}</td>
    <td>${e.entry ?? ""}</td>
    <td class="mono">${e.file ?? ""}</td>
    <td class="num">${e.bytes === undefined ? "" : formatBytes(e.bytes)}</td>
    <td>${e.detail ?? ""}</td>
  </tr>`;
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
    tr.className = "new";
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

export function machinePage(
  mac: string,
  machine: MachineRow | undefined,
  events: BootEvent[],
): string {
  const last = events.at(-1)?.seq ?? 0;
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
  return page(
    `Machine ${mac}`,
    "/ui/machines",
    html`<h1>Machine <span class="mono">${mac}</span></h1>
      ${details}
      <h2>Boot timeline</h2>
      <p id="live" class="live" aria-live="polite">${events.length} event(s).</p>
      <div class="table">
        <table>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Time</th>
              <th scope="col">Stage</th>
              <th scope="col">Entry</th>
              <th scope="col">File</th>
              <th scope="col">Bytes</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody id="timeline" data-mac="${mac}" data-since="${last}">
            ${
              events.length
                ? events.map(eventRow)
                : html`<tr id="no-events">
                    <td colspan="7" class="muted">No events yet.</td>
                  </tr>`
            }
          </tbody>
        </table>
      </div>`,
    LIVE_TIMELINE,
  );
}

function fileText(ref: { path?: string; url?: string }): string {
  return ref.url ?? ref.path ?? "";
}

function entryWhat(e: Entry): Html {
  switch (e.kind) {
    case "kernel":
    case "image": {
      const image =
        e.kind === "image"
          ? html`<div>
              image <code>${e.image.source}</code> from
              ${e.image.stores.map((s, i) => html`${i ? ", " : ""}<code>${s}</code>`)}; disk
              ${e.disk}${e.nbdOverlay ? "; NBD overlay" : ""}
            </div>`
          : "";
      return html`${image}
        <div>kernel <code>${fileText(e.kernel)}</code></div>
        ${e.initrd.map((r) => html`<div>initrd <code>${fileText(r)}</code></div>`)}${e.cmdline ? html`<div>cmdline <code>${e.cmdline}</code></div>` : ""}`;
    }
    case "iso":
      return html`<div>ISO <code>${e.iso}</code>${e.recipe ? ` (recipe ${e.recipe})` : ""}</div>
        ${e.cmdline ? html`<div>cmdline <code>${e.cmdline}</code></div>` : ""}`;
    case "menu":
      return html`menu: ${e.items.join(", ")}; default ${e.defaultItem ?? e.items[0]} after
      ${e.timeoutSeconds} s`;
    case "chain":
    case "sanboot":
      return html`<code>${e.url}</code>`;
    case "local":
      return html`exit to the next boot device`;
    case "shell":
      return html`the iPXE shell`;
  }
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
  return page(
    "Catalog",
    "/ui/catalog",
    html`<h1>Catalog</h1>
      <p>
        Configuration: <code>${config.source}</code>. Machines no rule matches boot
        <strong>${config.default}</strong>.
      </p>
      ${warnings}
      <h2>Entries</h2>
      <div class="table">
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">Title</th>
              <th scope="col">Boots</th>
              <th scope="col">Once</th>
            </tr>
          </thead>
          <tbody>
            ${[...config.entries.values()].map(
              (e) =>
                html`<tr>
                  <td><code>${e.name}</code></td>
                  <td>${e.kind}</td>
                  <td>${e.title}</td>
                  <td>${entryWhat(e)}</td>
                  <td>${e.once ? "yes" : ""}</td>
                </tr>`,
            )}
          </tbody>
        </table>
      </div>
      <h2>Matching rules</h2>
      <p class="muted">
        The most specific matching rule wins: MAC or UUID over host name over labels over
        architecture; ties go to the rule written first.
      </p>
      <div class="table">
        <table>
          <thead>
            <tr>
              <th scope="col">Rule</th>
              <th scope="col">Matches</th>
              <th scope="col">Boots</th>
              <th scope="col">Line</th>
            </tr>
          </thead>
          <tbody>
            ${
              config.machines.length
                ? config.machines.map(
                    (r) =>
                      html`<tr>
                        <td>${r.name}</td>
                        <td>${matchText(r.match)}</td>
                        <td><code>${r.boot}</code></td>
                        <td class="num">${r.line || ""}</td>
                      </tr>`,
                  )
                : html`<tr>
                    <td colspan="4" class="muted">
                      No rules: every machine boots ${config.default}.
                    </td>
                  </tr>`
            }
          </tbody>
        </table>
      </div>`,
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
}

function releaseRows(v: ImageView, write: boolean): Html {
  const name = v.source.replace(/@.*$/, "");
  const rows = (v.releases ?? []).filter((r) => r.name === name);
  if (rows.length === 0) {
    return html`<tr>
      <td colspan="10" class="muted">No releases of ${name} in the store.</td>
    </tr>`;
  }
  return html`${rows.map((r) => {
    const signature = r.problem
      ? html`<span class="bad">${r.problem}</span>`
      : r.verified
        ? html`<span class="good">verified</span>`
        : html`<span class="bad">not verified</span>`;
    const using = v.open === `${r.name}@${r.revision}` ? html` <strong>(in use)</strong>` : "";
    const pinned = r.digest && v.pinned === r.digest ? html` <strong>(pinned)</strong>` : "";
    const action =
      write && r.digest
        ? html`<form
            class="inline"
            method="post"
            action="/ui/images/${encodeURIComponent(v.entry)}/pin"
          >
            <input type="hidden" name="release" value="${r.digest}" />
            <label
              >Token <input type="password" name="token" autocomplete="off" required size="10"
            /></label>
            <button type="submit">Boot this release</button>
          </form>`
        : "";
    return html`<tr>
      <td class="num">${r.revision}${using}${pinned}</td>
      <td>${time(r.created ?? undefined)}</td>
      <td class="num">${formatBytes(r.size ?? 0)}</td>
      <td class="num">
        ${r.sharedWithPrevious === null ? "—" : formatBytes(r.sharedWithPrevious)}
      </td>
      <td class="mono">${r.signer ?? "unsigned"}</td>
      <td>${signature}</td>
      <td>${r.profile ? "yes" : "no"}</td>
      <td>${r.pack ? "yes" : "no"}</td>
      <td class="mono wide">${r.digest?.slice(0, 16) ?? ""}</td>
      <td>${action}</td>
    </tr>`;
  })}`;
}

export function imagesPage(images: ImageView[], isos: IsoView[], write: boolean): string {
  const sections = images.map((v) => {
    const unpin =
      write && v.pinned
        ? html`<form
            class="inline"
            method="post"
            action="/ui/images/${encodeURIComponent(v.entry)}/pin"
          >
            <input type="hidden" name="release" value="latest" />
            <label
              >Token <input type="password" name="token" autocomplete="off" required size="10"
            /></label>
            <button type="submit">Follow the latest release again</button>
          </form>`
        : "";
    return html`<h2>Entry <code>${v.entry}</code>: image <code>${v.source}</code></h2>
      <p>
        Store${v.stores.length > 1 ? "s (mirrors)" : ""}:
        ${v.stores.map((s, i) => html`${i ? ", " : ""}<code>${s}</code>`)}.
        ${v.open ? html`Open: <strong>${v.open}</strong>.` : html`<span class="muted">Not opened yet (the first boot opens it).</span>`}
        ${v.pinned ? html` Pinned from the dashboard to <code>${v.pinned.slice(0, 16)}</code>.` : ""}
      </p>
      ${v.error ? html`<p class="bad">Cannot list the store: ${v.error}</p>` : ""} ${unpin}
      <div class="table">
        <table>
          <thead>
            <tr>
              <th scope="col">Revision</th>
              <th scope="col">Created</th>
              <th scope="col">Size</th>
              <th scope="col">Shared with previous</th>
              <th scope="col">Signer</th>
              <th scope="col">Signature</th>
              <th scope="col">Boot profile</th>
              <th scope="col">Boot pack</th>
              <th scope="col" class="wide">Digest</th>
              <th scope="col">${write ? "Roll back" : ""}</th>
            </tr>
          </thead>
          <tbody>
            ${releaseRows(v, write)}
          </tbody>
        </table>
      </div>`;
  });
  const isoTable = isos.length
    ? html`<h2>Live ISOs</h2>
        <div class="table">
          <table>
            <thead>
              <tr>
                <th scope="col">Entry</th>
                <th scope="col">ISO</th>
                <th scope="col">Family</th>
                <th scope="col">Cached</th>
              </tr>
            </thead>
            <tbody>
              ${isos.map(
                (i) =>
                  html`<tr>
                    <td><code>${i.entry}</code></td>
                    <td class="mono">${i.iso}</td>
                    <td>${i.family ?? html`<span class="muted">not opened yet</span>`}</td>
                    <td class="num">
                      ${i.cachedBytes === null ? "—" : `${formatBytes(i.cachedBytes)} of ${formatBytes(i.size ?? 0)}`}
                    </td>
                  </tr>`,
              )}
            </tbody>
          </table>
        </div>`
    : "";
  const note = write
    ? html`<p class="muted">
        Write actions are on: rolling back needs the token from the configuration
        (<code>ui.token</code>).
      </p>`
    : html`<p class="muted">
        Roll-back from this page is off (set <code>ui: { write: true, token: … }</code> in the
        configuration to turn it on).
      </p>`;
  return page(
    "Images",
    "/ui/images",
    html`<h1>Images</h1>
      ${note}${
        images.length || isos.length ? "" : html`<p>No image or ISO entries are configured.</p>`
      }${sections}${isoTable}`,
  );
}

export interface CacheView {
  dir: string;
  bytes: number | null;
  chunks: number | null;
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
  }[];
  mirrors: (MirrorStats & { entry: string })[];
  isos: {
    entry: string;
    hits: number;
    misses: number;
    fetchedBytes: number;
    cachedBytes: number;
    repaired: number;
  }[];
}

export function cachePage(v: CacheView): string {
  const lookups = v.hits + v.misses;
  return page(
    "Cache and mirrors",
    "/ui/cache",
    html`<h1>Cache and mirrors</h1>
      <h2>Chunk cache</h2>
      <dl>
        <dt>Folder</dt>
        <dd><code>${v.dir}</code></dd>
        <dt>Size</dt>
        <dd>
          ${v.bytes === null ? "— (no image opened yet)" : `${formatBytes(v.bytes)} in ${v.chunks ?? 0} chunks`}
        </dd>
        <dt>Quota</dt>
        <dd>${v.quotaBytes === null ? "—" : formatBytes(v.quotaBytes)}</dd>
        <dt>Hit rate</dt>
        <dd>
          ${lookups ? `${((100 * v.hits) / lookups).toFixed(1)}% (${v.hits} hits, ${v.misses} misses)` : "no lookups yet"}
        </dd>
      </dl>
      <h2>Offline boot</h2>
      <div class="table">
        <table>
          <thead>
            <tr>
              <th scope="col">Entry</th>
              <th scope="col">Release</th>
              <th scope="col">Can boot offline</th>
              <th scope="col">Missing</th>
              <th scope="col">Judged by</th>
            </tr>
          </thead>
          <tbody>
            ${
              v.offline.length
                ? v.offline.map(
                    (o) =>
                      html`<tr>
                        <td><code>${o.entry}</code></td>
                        <td>${o.release}</td>
                        <td>
                          ${o.missing === 0 ? html`<span class="good">yes</span>` : html`<span class="bad">no</span>`}
                        </td>
                        <td class="num">
                          ${o.missing ? `${o.missing} of ${o.needed} chunks (${formatBytes(o.bytesMissing)})` : "—"}
                        </td>
                        <td>${o.basis}</td>
                      </tr>`,
                  )
                : html`<tr>
                    <td colspan="5" class="muted">No image opened yet.</td>
                  </tr>`
            }
          </tbody>
        </table>
      </div>
      <h2>Mirrors</h2>
      <div class="table">
        <table>
          <thead>
            <tr>
              <th scope="col">Entry</th>
              <th scope="col">Mirror</th>
              <th scope="col">Health</th>
              <th scope="col">Latency</th>
              <th scope="col">Requests</th>
              <th scope="col">Failures</th>
              <th scope="col">Failovers</th>
              <th scope="col" class="wide">Last error</th>
            </tr>
          </thead>
          <tbody>
            ${
              v.mirrors.length
                ? v.mirrors.map(
                    (m) =>
                      html`<tr>
                        <td><code>${m.entry}</code></td>
                        <td class="mono">${m.location}</td>
                        <td>
                          ${m.healthy ? html`<span class="good">healthy</span>` : html`<span class="bad">failing</span>`}
                        </td>
                        <td class="num">
                          ${m.latencyMs === null ? "—" : `${m.latencyMs.toFixed(1)} ms`}
                        </td>
                        <td class="num">${m.requests}</td>
                        <td class="num">${m.failures}</td>
                        <td class="num">${m.failovers}</td>
                        <td class="wide">${m.lastError ?? ""}</td>
                      </tr>`,
                  )
                : html`<tr>
                    <td colspan="8" class="muted">No image opened yet.</td>
                  </tr>`
            }
          </tbody>
        </table>
      </div>
      ${
        v.isos.length
          ? html`<h2>ISO block caches</h2>
              <div class="table">
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Entry</th>
                      <th scope="col">Cached</th>
                      <th scope="col">Fetched</th>
                      <th scope="col">Blocks read from cache</th>
                      <th scope="col">Blocks fetched</th>
                      <th scope="col">Repaired</th>
                    </tr>
                  </thead>
                  <tbody>
                    ${v.isos.map(
                      (i) =>
                        html`<tr>
                          <td><code>${i.entry}</code></td>
                          <td class="num">${formatBytes(i.cachedBytes)}</td>
                          <td class="num">${formatBytes(i.fetchedBytes)}</td>
                          <td class="num">${i.hits}</td>
                          <td class="num">${i.misses}</td>
                          <td class="num">${i.repaired}</td>
                        </tr>`,
                    )}
                  </tbody>
                </table>
              </div>`
          : ""
      }`,
  );
}
