// The dashboard's catalog page: entries (what each boots, from its kind), menus, rules with
// their lines, and the configuration's problems.
import type { Entry, ServeConfig } from "../config.ts";
import { kindOf } from "../entries/index.ts";
import { code, html, page, table } from "./html.ts";
import type { Html } from "./html.ts";

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
