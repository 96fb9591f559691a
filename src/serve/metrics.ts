// Prometheus text exposition (format 0.0.4) for `GET /metrics`: counters the server increments
// as things happen (boot events, HTTP requests, chunk fetch latency) and families read from the
// servers' own counters at scrape time (DHCP, TFTP, NBD, caches, mirrors).

export type Labels = Record<string, string>;

export interface Sample {
  labels?: Labels;
  value: number;
  /** "_bucket", "_sum", "_count" for histograms. */
  suffix?: string;
}

export interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  samples: Sample[];
}

/** Chunk fetch latency buckets, seconds. */
export const FETCH_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const escapeLabel = (v: string): string =>
  v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
const escapeHelp = (v: string): string => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

function labelText(labels: Labels | undefined): string {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return "";
  return `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
}

function valueText(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

export function renderFamilies(families: Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      out.push(`${f.name}${s.suffix ?? ""}${labelText(s.labels)} ${valueText(s.value)}`);
    }
  }
  return out.join("\n") + "\n";
}

interface Histogram {
  buckets: number[];
  counts: number[];
  sum: number;
  count: number;
  labels: Labels;
}

/** The counters and histograms the server updates as events happen. */
export class Metrics {
  readonly #counters = new Map<string, { help: string; values: Map<string, Sample> }>();
  readonly #histograms = new Map<string, { help: string; values: Map<string, Histogram> }>();

  inc(name: string, help: string, labels: Labels = {}, by = 1): void {
    let family = this.#counters.get(name);
    if (!family) {
      family = { help, values: new Map() };
      this.#counters.set(name, family);
    }
    const key = JSON.stringify(labels);
    const sample = family.values.get(key);
    if (sample) sample.value += by;
    else family.values.set(key, { labels, value: by });
  }

  observe(
    name: string,
    help: string,
    labels: Labels,
    value: number,
    buckets = FETCH_BUCKETS,
  ): void {
    let family = this.#histograms.get(name);
    if (!family) {
      family = { help, values: new Map() };
      this.#histograms.set(name, family);
    }
    const key = JSON.stringify(labels);
    let h = family.values.get(key);
    if (!h) {
      h = { buckets, counts: buckets.map(() => 0), sum: 0, count: 0, labels };
      family.values.set(key, h);
    }
    for (let i = 0; i < buckets.length; i++) if (value <= buckets[i]) h.counts[i]++;
    h.sum += value;
    h.count++;
  }

  families(): Family[] {
    const out: Family[] = [];
    for (const [name, f] of this.#counters) {
      out.push({ name, help: f.help, type: "counter", samples: [...f.values.values()] });
    }
    for (const [name, f] of this.#histograms) {
      const samples: Sample[] = [];
      for (const h of f.values.values()) {
        h.buckets.forEach((le, i) =>
          samples.push({
            labels: { ...h.labels, le: String(le) },
            value: h.counts[i],
            suffix: "_bucket",
          }),
        );
        samples.push(
          { labels: { ...h.labels, le: "+Inf" }, value: h.count, suffix: "_bucket" },
          { labels: h.labels, value: h.sum, suffix: "_sum" },
          { labels: h.labels, value: h.count, suffix: "_count" },
        );
      }
      out.push({ name, help: f.help, type: "histogram", samples });
    }
    return out;
  }
}

/** A family from a list of [labels, value] read at scrape time. */
export function family(
  name: string,
  type: Family["type"],
  help: string,
  samples: [Labels, number][],
): Family {
  return { name, type, help, samples: samples.map(([labels, value]) => ({ labels, value })) };
}
