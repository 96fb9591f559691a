// The dashboard's machine pages: every machine seen (live) and one machine's boot timeline
// (live), rendered on the server; a few lines of script follow /api/events/stream.
import { formatBytes } from "../../lib/format.ts";
import type { BootEvent, MachineRecord } from "../events.ts";
import type { Choice } from "../plan.ts";
import { code, emptyRow, html, page, table, time, writeForm } from "./html.ts";
import type { Html } from "./html.ts";

export type MachineRow = MachineRecord & {
  /** Whether the machine registry has a record for it (else it can be adopted). */
  registered?: boolean;
  next: Choice & { once?: string };
  secureBoot: "none (BIOS)" | "off (unsigned iPXE ran)" | "unknown";
};

function loaderText(m: MachineRow): Html {
  return m.loader
    ? html`${m.loader} <span class="muted">· Secure Boot ${m.secureBoot}</span>`
    : html`<span class="muted">unknown</span>`;
}

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

const MACHINE_COLUMNS = [
  "MAC",
  "Host name",
  "Firmware",
  "Loader",
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
        <td>${loaderText(m)}</td>
        <td class="mono">${m.ip ?? ""}</td>
        <td>${m.lastStage}</td>
        <td>${time(m.lastSeen)}</td>
        <td>${nextText(m)}</td>
        <td class="wide">
          ${m.next.rule}${
            m.registered === false
              ? html` ·
                  <a href="/ui/machines/${encodeURIComponent(m.mac)}#registry">adopt</a>`
              : ""
          }
        </td>
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

export function machinesPage(rows: MachineRow[], extra: Html | string = ""): string {
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
      })}
      ${extra}`,
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
  /** More sections (the registry form when write actions are on). */
  extra: Html | string = "",
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
        <dt>Boot loader</dt>
        <dd>${loaderText(machine)}</dd>
        <dt>IP</dt>
        <dd class="mono">${machine.ip ?? "—"}</dd>
        <dt>Last stage</dt>
        <dd><span id="last-stage">${machine.lastStage}</span> · ${time(machine.lastSeen)}</dd>
        <dt>First seen</dt>
        <dd>${time(machine.firstSeen)}</dd>
        <dt>Boots next</dt>
        <dd>${nextText(machine)} — ${machine.next.rule}</dd>
        ${
          machine.cloudInit
            ? html`<dt>cloud-init</dt>
                <dd>
                  instance-id ${code(machine.cloudInit.instanceId)}; fetched
                  ${machine.cloudInit.fetched.join(", ")} · ${time(machine.cloudInit.at)}
                </dd>`
            : ""
        }
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
      ${details} ${reset} ${extra}
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
