// Per-machine files from templates: plain text with `{{ name }}` places filled from what the
// server knows of the machine (MAC, host name, address, labels, entry, release, instance-id),
// each optionally through an escaping filter — `{{ hostname | yaml }}`, `| json`, `| shell`,
// `| url` — so a value lands safely in a YAML, JSON, shell or URL context. `{{ "{{" }}` writes
// a literal. Nothing else: no logic, no code run, no file includes. Templates are parsed when
// the configuration is read, so an unknown name, filter or an unclosed place is a `file:line`
// error at --check; rendering is then all-or-nothing and cannot fail half-way.

export const FILTERS = ["yaml", "json", "shell", "url"] as const;
export type Filter = (typeof FILTERS)[number];

/** Names a template may use (label.KEY besides). */
export const TEMPLATE_NAMES = [
  "mac",
  "mac_dashes",
  "mac_plain",
  "ip",
  "hostname",
  "entry",
  "release",
  "instance_id",
  "server",
] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];

/** What a machine's files are rendered with. */
export interface TemplateFacts {
  values: Record<TemplateName, string>;
  labels: Record<string, string>;
}

type Part = string | { name: string; filter?: Filter; line: number };

export interface Template {
  /** Where it came from (messages). */
  source: string;
  parts: Part[];
}

/** Longest template read (a cloud-init user-data is a few KiB). */
export const MAX_TEMPLATE = 256 * 1024;

/** Parses `text`; errors are "FILE:LINE: what". */
export function parseTemplate(
  text: string,
  source: string,
): { template?: Template; errors: string[] } {
  const errors: string[] = [];
  if (text.length > MAX_TEMPLATE) return { errors: [`${source}: over ${MAX_TEMPLATE} bytes`] };
  const parts: Part[] = [];
  let at = 0;
  const lineOf = (i: number): number => text.slice(0, i).split("\n").length;
  for (;;) {
    const open = text.indexOf("{{", at);
    if (open < 0) {
      parts.push(text.slice(at));
      break;
    }
    parts.push(text.slice(at, open));
    const close = text.indexOf("}}", open + 2);
    const line = lineOf(open);
    if (close < 0 || text.slice(open + 2, close).includes("\n")) {
      errors.push(`${source}:${line}: "{{" is not closed by "}}" on its line`);
      break;
    }
    const inner = text.slice(open + 2, close).trim();
    at = close + 2;
    const literal = /^"([^"]*)"$/.exec(inner);
    if (literal) {
      parts.push(literal[1]);
      continue;
    }
    const m = /^([a-z_]+(?:\.[A-Za-z0-9_.-]+)?)\s*(?:\|\s*([a-z]+))?$/.exec(inner);
    if (!m) {
      errors.push(
        `${source}:${line}: "{{ ${inner} }}" is not a name (${TEMPLATE_NAMES.join(", ")}, label.KEY) with an optional | filter`,
      );
      continue;
    }
    const [, name, filter] = m;
    if (!(TEMPLATE_NAMES as readonly string[]).includes(name) && !name.startsWith("label.")) {
      errors.push(
        `${source}:${line}: unknown name "${name}" (known: ${TEMPLATE_NAMES.join(", ")}, label.KEY)`,
      );
      continue;
    }
    if (filter !== undefined && !(FILTERS as readonly string[]).includes(filter)) {
      errors.push(`${source}:${line}: unknown filter "${filter}" (known: ${FILTERS.join(", ")})`);
      continue;
    }
    parts.push({ name, filter: filter as Filter | undefined, line });
  }
  return errors.length ? { errors } : { template: { source, parts }, errors };
}

/** A value escaped for its context. */
function escape(value: string, filter: Filter | undefined): string {
  switch (filter) {
    case "json":
      return JSON.stringify(value);
    case "yaml":
      // A double-quoted YAML scalar: JSON's escapes are YAML's.
      return JSON.stringify(value);
    case "shell":
      return `'${value.replace(/'/g, `'\\''`)}'`;
    case "url":
      return encodeURIComponent(value);
    default:
      return value;
  }
}

/** The template filled in for a machine. */
export function renderTemplate(t: Template, facts: TemplateFacts): string {
  return t.parts
    .map((p) => {
      if (typeof p === "string") return p;
      const value = p.name.startsWith("label.")
        ? (facts.labels[p.name.slice("label.".length)] ?? "")
        : facts.values[p.name as TemplateName];
      return escape(value, p.filter);
    })
    .join("");
}
