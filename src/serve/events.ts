// Every stage of every boot as an event (DHCP offer/ack, TFTP file, script, kernel, initrd),
// kept in a bounded ring for /api/events, folded into one record per machine for /api/machines,
// and passed to listeners (live pages, metrics).
import type { Firmware } from "../dhcp/firmware.ts";

export interface BootEvent {
  /** Increasing event number (for ?since=). */
  seq: number;
  time: string;
  stage: string;
  mac?: string;
  ip?: string;
  file?: string;
  entry?: string;
  rule?: string;
  detail?: string;
  bytes?: number;
  ms?: number;
}

export interface MachineRecord {
  mac: string;
  ip?: string;
  hostname?: string;
  uuid?: string;
  firmware?: {
    arch: number;
    kind: string;
    cpu: string;
    description: string;
    ipxe: boolean;
    http: boolean;
  };
  /** iPXE's own report (buildarch, platform). */
  ipxe?: { buildarch?: string; platform?: string };
  /** The labels its boot loader reported (the query of its plan request). */
  labels?: Record<string, string>;
  /** Its entry's cloud-init datasource: the instance-id served and the files fetched. */
  cloudInit?: { instanceId: string; fetched: string[]; at: string };
  /** The boot loader it was handed or asked from: "iPXE", "GRUB" or "shim → GRUB". */
  loader?: string;
  lastStage: string;
  /** The file of its last event that named one (a boot file, a TFTP transfer, a kernel). */
  lastFile?: string;
  lastSeen: string;
  /** The entry it was last given and the rule that chose it. */
  entry?: string;
  rule?: string;
  firstSeen: string;
  events: number;
}

export type EventInput = Omit<BootEvent, "seq" | "time">;

/** Machines remembered (the least recently seen is forgotten past it). */
export const MAX_MACHINES = 10_000;
/** Longest text kept in an event's fields (details and file names come from the network). */
export const MAX_EVENT_TEXT = 1024;
/** Longest host name, UUID or iPXE fact kept on a machine's record. */
export const MAX_FACT_TEXT = 253;

const cut = (v: string | undefined, max: number): string | undefined =>
  v === undefined || v.length <= max ? v : `${v.slice(0, max - 1)}…`;
export type EventListener = (event: BootEvent, machine: MachineRecord | undefined) => void;

export class EventLog {
  readonly #ring: BootEvent[] = [];
  readonly #capacity: number;
  readonly #machines = new Map<string, MachineRecord>();
  readonly #listeners = new Set<EventListener>();
  #seq = 0;

  readonly #maxMachines: number;
  /** Address → the machine last seen there. */
  readonly #byIp = new Map<string, string>();

  constructor(capacity = 5000, maxMachines = MAX_MACHINES) {
    this.#capacity = capacity;
    this.#maxMachines = maxMachines;
  }

  record(
    input: EventInput,
    facts: {
      firmware?: Firmware;
      hostname?: string;
      uuid?: string;
      ipxe?: MachineRecord["ipxe"];
      loader?: string;
      labels?: Record<string, string>;
    } = {},
  ): BootEvent {
    const event: BootEvent = { seq: ++this.#seq, time: new Date().toISOString(), ...input };
    for (const k of Object.keys(event) as (keyof BootEvent)[]) {
      const v = event[k];
      if (v === undefined || v === "") delete event[k];
      else if (typeof v === "string" && v.length > MAX_EVENT_TEXT) {
        (event as unknown as Record<string, string>)[k] = cut(v, MAX_EVENT_TEXT) as string;
      }
    }
    this.#ring.push(event);
    if (this.#ring.length > this.#capacity)
      this.#ring.splice(0, this.#ring.length - this.#capacity);
    let machine: MachineRecord | undefined;
    if (event.mac) {
      machine = this.#machines.get(event.mac) ?? {
        mac: event.mac,
        lastStage: event.stage,
        lastSeen: event.time,
        firstSeen: event.time,
        events: 0,
      };
      machine.lastStage = event.stage;
      machine.lastSeen = event.time;
      if (event.file) machine.lastFile = event.file;
      machine.events++;
      if (event.ip) {
        if (machine.ip && machine.ip !== event.ip && this.#byIp.get(machine.ip) === machine.mac)
          this.#byIp.delete(machine.ip);
        machine.ip = event.ip;
        this.#byIp.set(event.ip, machine.mac);
      }
      if (event.entry) machine.entry = event.entry;
      if (event.rule) machine.rule = event.rule;
      if (facts.hostname) machine.hostname = cut(facts.hostname, MAX_FACT_TEXT);
      if (facts.uuid) machine.uuid = cut(facts.uuid, MAX_FACT_TEXT);
      if (facts.labels) machine.labels = facts.labels;
      if (event.stage === "cloud-init" && event.file && event.detail) {
        const instanceId = event.detail.replace(/^instance-id /, "");
        const same = machine.cloudInit?.instanceId === instanceId;
        const fetched = same ? (machine.cloudInit?.fetched ?? []) : [];
        if (!fetched.includes(event.file) && fetched.length < 8) fetched.push(event.file);
        machine.cloudInit = { instanceId, fetched, at: event.time };
      }
      if (facts.ipxe) {
        const { buildarch, platform } = { ...machine.ipxe, ...facts.ipxe };
        machine.ipxe = { buildarch: cut(buildarch, 32), platform: cut(platform, 32) };
      }
      // GRUB asking for a plan does not say whether shim loaded it: what DHCP handed out stays.
      if (facts.loader && !(facts.loader === "GRUB" && machine.loader === "shim → GRUB"))
        machine.loader = facts.loader;
      if (facts.firmware) {
        const f = facts.firmware;
        machine.firmware = {
          arch: f.arch,
          kind: f.kind,
          cpu: f.cpu,
          description: f.description,
          ipxe: f.ipxe,
          http: f.http,
        };
      }
      // Most recently seen last: the first one is the one to forget.
      this.#machines.delete(event.mac);
      this.#machines.set(event.mac, machine);
      if (this.#machines.size > this.#maxMachines) {
        const oldest = this.#machines.keys().next().value;
        const ip = oldest === undefined ? undefined : this.#machines.get(oldest)?.ip;
        if (ip && this.#byIp.get(ip) === oldest) this.#byIp.delete(ip);
        if (oldest !== undefined) this.#machines.delete(oldest);
      }
    }
    for (const listener of this.#listeners) listener(event, machine);
    return event;
  }

  /** Events after `since` (all kept ones by default), optionally for one machine. */
  events(options: { since?: number; mac?: string; limit?: number } = {}): BootEvent[] {
    const since = options.since ?? 0;
    const out = this.#ring.filter((e) => e.seq > since && (!options.mac || e.mac === options.mac));
    return options.limit ? out.slice(-options.limit) : out;
  }

  machines(): MachineRecord[] {
    return [...this.#machines.values()].sort((a, b) => b.lastSeen.localeCompare(a.lastSeen));
  }

  machine(mac: string): MachineRecord | undefined {
    return this.#machines.get(mac);
  }

  /** The client IP → MAC mapping learned from DHCP (TFTP and HTTP requests carry only an IP). */
  macForIp(ip: string): string | undefined {
    return this.#byIp.get(ip);
  }

  subscribe(listener: EventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
