// Server-rendered HTML with escaping by default: every value interpolated into `html` is escaped
// unless it is itself Html (a fragment built the same way), so a hostname sent by a machine in a
// DHCP packet cannot become markup or script.

export class Html {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
  toString(): string {
    return this.text;
  }
}

export function escapeHtml(value: unknown): string {
  return String(value)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function part(value: unknown): string {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(part).join("");
  return escapeHtml(value);
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1];
  return new Html(out);
}

const STYLE = `
:root { color-scheme: light; --fg: #1b1b1b; --muted: #555; --line: #d0d0d0; --accent: #0b57d0; --bad: #a50e0e; --good: #146c2e; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, sans-serif; color: var(--fg); background: #fff; }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #f9ab00; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; }
header { background: #202124; color: #fff; padding: 8px 16px; display: flex; flex-wrap: wrap; gap: 4px 20px; align-items: baseline; }
header .brand { font-weight: 700; color: #fff; text-decoration: none; }
nav ul { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: #e8eaed; }
nav a[aria-current="page"] { color: #fff; font-weight: 700; text-decoration-thickness: 3px; }
main { padding: 12px 16px 32px; max-width: 1200px; }
h1 { font-size: 1.5rem; margin: 8px 0 12px; }
h2 { font-size: 1.2rem; margin: 24px 0 8px; }
.table { overflow-x: auto; border: 1px solid var(--line); border-radius: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f1f3f4; white-space: nowrap; }
caption { text-align: left; padding: 4px 10px; color: var(--muted); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mono, a.mono, time { white-space: nowrap; word-break: normal; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.92em; word-break: break-all; }
.muted { color: var(--muted); }
.bad { color: var(--bad); font-weight: 600; }
.good { color: var(--good); font-weight: 600; }
.live { font-size: 0.9rem; color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
dt { font-weight: 600; }
dd { margin: 0; }
form.inline { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
button { font: inherit; padding: 4px 10px; }
@media (max-width: 640px) {
  body { font-size: 15px; }
  main { padding: 8px; }
  th, td { padding: 4px 6px; }
  .wide { display: none; }
}
`;

export const PAGES: [string, string][] = [
  ["/ui/machines", "Machines"],
  ["/ui/catalog", "Catalog"],
  ["/ui/images", "Images"],
  ["/ui/cache", "Cache and mirrors"],
];

/**
 * The exact texts of the inline scripts and styles pages carry: the only ones the pages'
 * Content-Security-Policy admits (by hash). Filled from code constants, never from data, so a
 * <script> that data smuggled into a page would not run.
 */
export const INLINE_TEXTS = new Set<string>();

function inline(tag: "script" | "style", text: string): Html {
  INLINE_TEXTS.add(text);
  return new Html(`<${tag}>${text}</${tag}>`);
}

/** A whole page: header with navigation, `body` in main, an optional script at the end. */
export function page(title: string, path: string, body: Html, script?: string): string {
  const nav = PAGES.map(
    ([href, label]) =>
      html`<li>
        <a href="${href}" ${new Html(path === href ? ' aria-current="page"' : "")}>${label}</a>
      </li>`,
  );
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title} · inetboot</title>
        ${inline("style", STYLE)}
      </head>
      <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
          <a class="brand" href="/ui/machines">inetboot</a>
          <nav aria-label="Sections">
            <ul>
              ${nav}
            </ul>
          </nav>
        </header>
        <main id="main">${body}</main>
        ${script ? inline("script", script) : ""}
      </body>
    </html> `.text;
}

export interface Column {
  label: string;
  /** Hidden on phone-sized screens. */
  wide?: boolean;
}

/**
 * A scrollable table: column headers, rows, and a row saying `empty` when there are none.
 * `body` adds attributes to the tbody (an id for live updates).
 */
export function table(
  columns: (string | Column)[],
  rows: Html[],
  options: { empty: string; body?: Record<string, string>; caption?: string },
): Html {
  const cols = columns.map((c) => (typeof c === "string" ? { label: c } : c));
  const attrs = Object.entries(options.body ?? {}).map(([k, v]) => html` ${k}="${v}"`);
  // Focusable so keyboard users can scroll a wide table on a small screen.
  const label = options.caption ?? cols.map((c) => c.label).join(", ");
  return html`<div class="table" role="region" tabindex="0" aria-label="${label}"><table>${
    options.caption
      ? html`<caption>
          ${options.caption}
        </caption>`
      : ""
  }<thead><tr>${cols.map((c) => html`<th scope="col" ${c.wide ? new Html(' class="wide"') : ""}>${c.label}</th>`)}</tr></thead><tbody${attrs}>${rows.length ? rows : emptyRow(cols.length, options.empty)}</tbody></table></div>`;
}

/** The row a table shows when it has no data. */
export function emptyRow(columns: number, text: string, id?: string): Html {
  return html`<tr${id ? html` id="${id}"` : ""}><td colspan="${columns}" class="muted">${text}</td></tr>`;
}

/** A <time> element with the ISO time as machine value and a short local reading. */
export function time(iso: string | undefined): Html {
  if (!iso) return html`<span class="muted">—</span>`;
  return html`<time datetime="${iso}">${iso.replace("T", " ").replace(/\.\d+Z$/, " UTC")}</time>`;
}

/** A value as code. */
export const code = (v: string): Html => html`<code>${v}</code>`;

/** Values as code, comma-separated. */
export const codes = (list: string[]): Html[] =>
  list.map((s, i) => html`${i ? ", " : ""}${code(s)}`);

/** Yes or no. */
export const yes = (v: boolean): string => (v ? "yes" : "no");
export const good = (ok: boolean, yesText: string, noText: string): Html =>
  ok ? html`<span class="good">${yesText}</span>` : html`<span class="bad">${noText}</span>`;

/** A token-guarded form posting `hidden` values (write actions; off unless configured). */
export function writeForm(action: string, hidden: Record<string, string>, label: string): Html {
  return html`<form class="inline" method="post" action="${action}">
    ${Object.entries(hidden).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}" />`)}
    <label
      >Token <input type="password" name="token" autocomplete="off" required size="10"
    /></label>
    <button type="submit">${label}</button>
  </form>`;
}
