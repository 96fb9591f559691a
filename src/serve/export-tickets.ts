// Per-boot NBD export names. Each plan for an image entry issues a ticket: an export name with
// an unguessable token (`ENTRY-MAC-TOKEN`, 96 random bits), owned by the address that asked for
// the plan. Knowing a machine's MAC is not enough to open its disk, a new ticket never cuts off
// a machine connected on an older one, and tickets nobody connected to expire. Bounded: at most
// MAX_TICKETS_PER_ADDRESS waiting tickets per address and MAX_TICKETS in all; past either, the
// oldest waiting ticket goes (a connected one never does).
import { randomBytes } from "node:crypto";

/** How long a ticket waits for its machine to connect (and to reconnect after it left). */
export const DEFAULT_TICKET_TTL_MS = 10 * 60_000;
/** Waiting tickets one address may hold (a machine needs one per boot; a few for retries). */
export const MAX_TICKETS_PER_ADDRESS = 8;
/** Tickets in all (each is an NBD export; its disk is opened only when a client uses it). */
export const MAX_TICKETS = 4096;

/** An export name for logs and pages: the token cut to its first 4 digits. */
export function redactedExport(name: string): string {
  return name.replace(/-([0-9a-f]{4})[0-9a-f]{20}$/, "-$1…");
}

export interface Ticket {
  /** The export name handed to the machine (nbdroot=). */
  readonly name: string;
  readonly entry: string;
  readonly mac: string;
  /** The address the plan was asked from: the only one that may open the export. */
  readonly address: string;
  readonly issued: number;
  /** Last time it was issued, seen connected, or left by its client. */
  lastActive: number;
}

export interface ExportTicketsOptions {
  ttlMs?: number;
  maxPerAddress?: number;
  max?: number;
  now?: () => number;
  /** Connections on an export now (a connected ticket never expires nor is dropped). */
  clientsOf: (name: string) => number;
}

export class ExportTickets {
  readonly #o: Required<Omit<ExportTicketsOptions, "clientsOf">> &
    Pick<ExportTicketsOptions, "clientsOf">;
  /** By name, oldest first. */
  readonly #tickets = new Map<string, Ticket>();
  /** ENTRY/MAC → the newest ticket's name (the current one). */
  readonly #current = new Map<string, string>();
  /** Address → its tickets' names, oldest first. */
  readonly #byAddress = new Map<string, Set<string>>();
  #expired = 0;

  constructor(options: ExportTicketsOptions) {
    this.#o = {
      ttlMs: options.ttlMs ?? DEFAULT_TICKET_TTL_MS,
      maxPerAddress: options.maxPerAddress ?? MAX_TICKETS_PER_ADDRESS,
      max: options.max ?? MAX_TICKETS,
      now: options.now ?? Date.now,
      clientsOf: options.clientsOf,
    };
  }

  static prefix(entry: string, mac: string): string {
    return `${entry}-${mac.replace(/:/g, "-")}`;
  }

  get size(): number {
    return this.#tickets.size;
  }

  /**
   * A new ticket for a machine's boot; returns it with the tickets that had to go to make room
   * (the caller removes their exports).
   */
  issue(entry: string, mac: string, address: string): { ticket: Ticket; dropped: Ticket[] } {
    const now = this.#o.now();
    const token = randomBytes(12).toString("hex");
    const ticket: Ticket = {
      name: `${ExportTickets.prefix(entry, mac)}-${token}`,
      entry,
      mac,
      address,
      issued: now,
      lastActive: now,
    };
    // Expiry runs at most once a second here (and from the caller's timer), not per request.
    const dropped = now - this.#expired > 1000 ? this.expire() : [];
    const waiting = (t: Ticket): boolean => this.#o.clientsOf(t.name) === 0;
    const mine = [...(this.#byAddress.get(address) ?? [])]
      .map((n) => this.#tickets.get(n) as Ticket)
      .filter(waiting);
    while (mine.length >= this.#o.maxPerAddress) dropped.push(this.#drop(mine.shift() as Ticket));
    if (this.#tickets.size >= this.#o.max) {
      for (const t of this.#tickets.values()) {
        if (this.#tickets.size < this.#o.max) break;
        if (waiting(t)) dropped.push(this.#drop(t));
      }
    }
    this.#tickets.set(ticket.name, ticket);
    const names = this.#byAddress.get(address) ?? new Set<string>();
    names.add(ticket.name);
    this.#byAddress.set(address, names);
    this.#current.set(`${entry}/${mac}`, ticket.name);
    return { ticket, dropped };
  }

  get(name: string): Ticket | undefined {
    return this.#tickets.get(name);
  }

  /** The machine's newest ticket for the entry. */
  current(entry: string, mac: string): Ticket | undefined {
    const name = this.#current.get(`${entry}/${mac}`);
    return name === undefined ? undefined : this.#tickets.get(name);
  }

  isCurrent(ticket: Ticket): boolean {
    return this.#current.get(`${ticket.entry}/${ticket.mac}`) === ticket.name;
  }

  /** Every ticket of a machine for an entry. */
  of(entry: string, mac: string): Ticket[] {
    return [...this.#tickets.values()].filter((t) => t.entry === entry && t.mac === mac);
  }

  /** Drops tickets nobody is connected to that were idle longer than the TTL; returns them. */
  expire(): Ticket[] {
    const now = this.#o.now();
    this.#expired = now;
    const out: Ticket[] = [];
    for (const t of this.#tickets.values()) {
      if (this.#o.clientsOf(t.name) > 0) t.lastActive = now;
      else if (now - t.lastActive > this.#o.ttlMs) out.push(this.#drop(t));
    }
    return out;
  }

  /** Forgets a ticket (its export is the caller's to remove). */
  remove(name: string): Ticket | undefined {
    const t = this.#tickets.get(name);
    return t ? this.#drop(t) : undefined;
  }

  #drop(t: Ticket): Ticket {
    this.#tickets.delete(t.name);
    const names = this.#byAddress.get(t.address);
    names?.delete(t.name);
    if (names?.size === 0) this.#byAddress.delete(t.address);
    const key = `${t.entry}/${t.mac}`;
    if (this.#current.get(key) === t.name) {
      // The machine's newest remaining ticket becomes its current one (an older connection may
      // still need to reconnect on it).
      const rest = this.of(t.entry, t.mac);
      if (rest.length) this.#current.set(key, rest[rest.length - 1].name);
      else this.#current.delete(key);
    }
    return t;
  }
}
