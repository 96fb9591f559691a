// The dashboard's registry forms: a machine's record (host name, labels, the entry it boots,
// its next boot, notes) on its page — saving it adopts a machine seen but not yet registered —
// and a form for a machine not seen yet. Token-guarded like every write action; the record's
// version goes along, so a change made meanwhile (API, CLI, another browser) is not overwritten.
import type { RegistryRecord } from "../machine-registry.ts";
import { html } from "./html.ts";
import type { Html } from "./html.ts";

export interface RegistryFormView {
  record: RegistryRecord | undefined;
  entries: string[];
}

const labelsText = (l?: Record<string, string>): string =>
  Object.entries(l ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");

function options(entries: string[], chosen: string | undefined, none: string): Html {
  return html`<option value="">${none}</option>
    ${entries.map(
      (e) => html`<option value="${e}" ${e === chosen ? html`selected` : ""}>${e}</option>`,
    )}`;
}

/** The fields of a record, for the machine page or the new-machine form. */
function fields(v: RegistryFormView, withMac: boolean): Html {
  const r = v.record;
  return html`${
      withMac
        ? html`<label>MAC <input name="mac" required placeholder="52:54:00:12:34:56" /></label>`
        : ""
    }
    <input type="hidden" name="version" value="${String(r?.version ?? 0)}" />
    <label>Host name <input name="hostname" value="${r?.hostname ?? ""}" /></label>
    <label
      >Labels <input name="labels" value="${labelsText(r?.labels)}" placeholder="rack=r3, row=2"
    /></label>
    <label
      >Boots
      <select name="entry">
        ${options(v.entries, r?.entry, "(its rules)")}
      </select></label
    >
    <label
      >Next boot
      <select name="next">
        ${options(v.entries, r?.next, "(none)")}
      </select></label
    >
    <label>Notes <input name="notes" value="${r?.notes ?? ""}" /></label>
    <label
      >Token <input type="password" name="token" autocomplete="off" required size="10"
    /></label>`;
}

/** The registry section of a machine's page. */
export function registryForm(mac: string, v: RegistryFormView): Html {
  return html`<h2 id="registry">Registry</h2>
    <p>
      ${
        v.record
          ? html`Its registry record (version ${String(v.record.version)}) wins over the rules.`
          : html`Not in the registry: the rules choose for it. Saving adopts it.`
      }
    </p>
    <form class="registry" method="post" action="/ui/machines/${encodeURIComponent(mac)}/registry">
      ${fields(v, false)}
      <button type="submit">${v.record ? "Save" : "Adopt this machine"}</button>
    </form>`;
}

/** A form for a machine the server has not seen yet. */
export function newMachineForm(entries: string[]): Html {
  return html`<h2>Add a machine</h2>
    <form class="registry" method="post" action="/ui/registry">
      ${fields({ record: undefined, entries }, true)}
      <button type="submit">Add</button>
    </form>`;
}

/** A form's fields as a registry record's (empty means not set), labels from "k=v, k=v". */
export function formRecord(form: URLSearchParams): Record<string, unknown> {
  const text = (k: string): string | undefined => form.get(k)?.trim() || undefined;
  const labels: Record<string, string> = {};
  for (const part of (form.get("labels") ?? "").split(",")) {
    const p = part.trim();
    if (!p) continue;
    const at = p.indexOf("=");
    labels[at < 0 ? p : p.slice(0, at).trim()] = at < 0 ? "" : p.slice(at + 1).trim();
  }
  return {
    hostname: text("hostname"),
    entry: text("entry"),
    next: text("next"),
    notes: text("notes"),
    labels: Object.keys(labels).length ? labels : undefined,
  };
}
