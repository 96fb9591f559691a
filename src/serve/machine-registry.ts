// The machine registry: what people and scripts say about machines while the server runs —
// a host name, labels, the entry a machine boots, its next boot (an entry used once, then it
// falls back), notes — kept in STATE/machines.json beside the YAML rules. One writer (this
// process, changes one at a time), every write atomic and synced, so a kill at any moment
// leaves the old file or the new one. Each record has a version: its ETag, so two writers do
// not overwrite each other (If-Match). A registry record for a MAC wins over the rules.
import { readFile } from "node:fs/promises";
import { formatMac, parseMac } from "../dhcp/packet.ts";
import { isErrno, writeFileAtomic } from "../lib/atomic-file.ts";

/** A MAC in its one written form, or null. */
function macText(text: string): string | null {
  try {
    return formatMac(parseMac(text));
  } catch {
    return null;
  }
}

/** Records kept at most. */
export const MAX_RECORDS = 10_000;
const MAX_TEXT = 253;
const MAX_NOTES = 1024;
/** The registry file at most (each change rewrites it). */
export const MAX_FILE = 8 * 1024 * 1024;
const MAX_LABELS = 32;

export interface MachineRecordIn {
  hostname?: string;
  labels?: Record<string, string>;
  /** The entry it boots (else the rules choose). */
  entry?: string;
  /** The entry its next boot uses, once. */
  next?: string;
  notes?: string;
}

export interface RegistryRecord extends MachineRecordIn {
  mac: string;
  version: number;
  updated: string;
}

/** A request the registry refuses: its HTTP status, the field and what was expected. */
export class RegistryError extends Error {
  readonly status: number;
  readonly field?: string;
  constructor(status: number, message: string, field?: string) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const LABEL_KEY = /^[A-Za-z0-9_.-]{1,64}$/;

/** A record's fields from JSON, checked; `partial`: only the fields given (PATCH). */
export function checkRecord(
  body: unknown,
  entries: (name: string) => boolean,
  partial = false,
): MachineRecordIn {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new RegistryError(400, "expected a JSON object", "");
  const o = body as Record<string, unknown>;
  const out: MachineRecordIn = {};
  for (const key of Object.keys(o)) {
    if (!["hostname", "labels", "entry", "next", "notes"].includes(key))
      throw new RegistryError(
        400,
        `unknown field; expected hostname, labels, entry, next, notes`,
        key,
      );
  }
  const text = (key: keyof MachineRecordIn, max: number): string | undefined => {
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || v.length > max)
      throw new RegistryError(400, `expected a string of at most ${max} characters`, key);
    return v;
  };
  const hostname = text("hostname", MAX_TEXT);
  if (hostname !== undefined && !HOSTNAME.test(hostname))
    throw new RegistryError(
      400,
      "expected a host name (letters, digits, - in dot-separated labels)",
      "hostname",
    );
  for (const key of ["entry", "next"] as const) {
    const name = text(key, 64);
    if (name !== undefined && !entries(name))
      throw new RegistryError(
        400,
        `expected an entry of the configuration; there is no "${name}"`,
        key,
      );
    if (name !== undefined) out[key] = name;
  }
  if (hostname !== undefined) out.hostname = hostname;
  const notes = text("notes", MAX_NOTES);
  if (notes !== undefined) out.notes = notes;
  if (o.labels !== undefined && o.labels !== null) {
    const l = o.labels;
    if (typeof l !== "object" || Array.isArray(l))
      throw new RegistryError(400, "expected an object of string labels", "labels");
    const pairs = Object.entries(l as Record<string, unknown>);
    if (pairs.length > MAX_LABELS)
      throw new RegistryError(400, `expected at most ${MAX_LABELS} labels`, "labels");
    out.labels = {};
    for (const [k, v] of pairs) {
      if (!LABEL_KEY.test(k) || typeof v !== "string" || v.length > MAX_TEXT || v.includes(","))
        throw new RegistryError(
          400,
          `expected KEY: "value" (key letters, digits, _ . -; value a string without ",")`,
          `labels.${k}`,
        );
      out.labels[k] = v;
    }
  }
  // PUT replaces the record: fields not given are cleared (null clears one in a PATCH too).
  if (partial)
    for (const k of Object.keys(o))
      if (o[k] === null) (out as Record<string, unknown>)[k] = undefined;
  return out;
}

export class MachineRegistry {
  readonly #path: string;
  readonly #records = new Map<string, RegistryRecord>();
  /** The highest version given out. */
  #version = 0;
  #chain: Promise<void> = Promise.resolve();

  private constructor(path: string) {
    this.#path = path;
  }

  /** Opens STATE/machines.json (none yet: empty); a damaged file stops the start with the fix. */
  static async open(path: string): Promise<MachineRegistry> {
    const r = new MachineRegistry(path);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      if (isErrno(err, "ENOENT")) return r;
      throw err;
    }
    let list: unknown;
    try {
      list = (JSON.parse(text) as { machines?: unknown }).machines;
    } catch (err) {
      throw new Error(
        `${path} is not valid JSON (${(err as Error).message}): restore it from a backup or remove it to start an empty registry`,
        { cause: err },
      );
    }
    if (!Array.isArray(list))
      throw new Error(`${path} has no "machines" list: restore it or remove it`);
    for (const [i, m] of (list as RegistryRecord[]).entries()) {
      const mac = typeof m?.mac === "string" ? macText(m.mac) : null;
      if (!mac || !Number.isInteger(m.version) || m.version < 1 || i >= MAX_RECORDS) {
        throw new Error(
          `${path}: machines[${i}] is not a registry record (a MAC and a version; at most ${MAX_RECORDS}): fix or remove it`,
        );
      }
      r.#records.set(mac, { ...m, mac });
      r.#version = Math.max(r.#version, m.version);
    }
    return r;
  }

  list(): RegistryRecord[] {
    return [...this.#records.values()].sort((a, b) => a.mac.localeCompare(b.mac));
  }

  get(mac: string): RegistryRecord | undefined {
    return this.#records.get(mac);
  }

  static etag(r: RegistryRecord): string {
    return `"${r.version}"`;
  }

  /**
   * Changes the record of `mac` (`change` gets the current one, or undefined, and returns the
   * new fields, or null to delete it), after checking `ifMatch` against its ETag; written
   * before it resolves. One change at a time.
   */
  update(
    mac: string,
    ifMatch: string | undefined,
    change: (current: RegistryRecord | undefined) => MachineRecordIn | null,
  ): Promise<RegistryRecord | null> {
    const run = this.#chain.then(async () => {
      const current = this.#records.get(mac);
      if (
        ifMatch !== undefined &&
        (!current || (ifMatch !== "*" && MachineRegistry.etag(current) !== ifMatch))
      ) {
        throw new RegistryError(
          412,
          `the record changed since it was read (its ETag is ${current ? MachineRegistry.etag(current) : "none: it does not exist"})`,
          "If-Match",
        );
      }
      const fields = change(current);
      if (fields === null) {
        if (!current) throw new RegistryError(404, `no registry record for ${mac}`);
        this.#records.delete(mac);
        try {
          await this.#save();
        } catch (err) {
          this.#records.set(mac, current);
          throw err;
        }
        return null;
      }
      if (!current && this.#records.size >= MAX_RECORDS)
        throw new RegistryError(507, `the registry holds ${MAX_RECORDS} machines already`);
      const next: RegistryRecord = Object.fromEntries(
        Object.entries({
          ...fields,
          mac,
          // One counter for the registry: an ETag never comes back for another record.
          version: ++this.#version,
          updated: new Date().toISOString(),
        }).filter(([, v]) => v !== undefined),
      ) as unknown as RegistryRecord;
      this.#records.set(mac, next);
      try {
        await this.#save();
      } catch (err) {
        if (current) this.#records.set(mac, current);
        else this.#records.delete(mac);
        throw err;
      }
      return next;
    });
    this.#chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * The next boot `entry` was used: cleared, unless another next boot was set meanwhile.
   * Whether it was cleared.
   */
  async consumeNext(mac: string, entry: string): Promise<boolean> {
    if (this.#records.get(mac)?.next !== entry) return false;
    let cleared = false;
    await this.update(mac, undefined, (c) => {
      if (!c) return null;
      if (c.next !== entry) throw new RegistryError(409, "another next boot was set meanwhile");
      cleared = true;
      return { ...c, next: undefined };
    });
    return cleared;
  }

  async #save(): Promise<void> {
    const text = JSON.stringify({ machines: this.list() }, null, 1) + "\n";
    if (text.length > MAX_FILE)
      throw new RegistryError(
        507,
        `the registry would be over ${MAX_FILE} bytes: remove records or notes`,
      );
    await writeFileAtomic(this.#path, text, { durable: true });
  }
}
