// The address pool of full-mode DHCP: reservations by MAC, leases persisted to a file (written
// atomically before the ACK goes out, so a restart never hands one address to two machines),
// short-lived offers, declined addresses kept out of the pool for a while.
import { readFile } from "node:fs/promises";
import { isErrno, writeFileAtomic } from "../lib/atomic-file.ts";
import { ipToNumber, numberToIp } from "./packet.ts";

export interface Reservation {
  mac: string;
  ip: string;
  hostname?: string;
}

export interface PoolConfig {
  /** First and last address handed out dynamically (inclusive). */
  rangeStart: string;
  rangeEnd: string;
  netmask: string;
  reservations: Reservation[];
  leaseSeconds: number;
  /** How long an offered address is held for the client that was offered it. */
  offerHoldSeconds?: number;
  /** How long a declined address (in use by someone else) stays out of the pool. */
  declineHoldSeconds?: number;
}

export interface Lease {
  mac: string;
  ip: string;
  /** Milliseconds since the epoch. */
  expires: number;
  hostname?: string;
}

interface LeaseFile {
  format: "inetboot-leases 1";
  leases: Lease[];
  declined: { ip: string; until: number }[];
}

export class LeaseFileError extends Error {}

export class LeaseDb {
  readonly #pool: PoolConfig;
  readonly #file: string | null;
  readonly #now: () => number;
  readonly #leases = new Map<string, Lease>(); // by mac
  readonly #byIp = new Map<string, string>(); // ip -> mac (leases and offers)
  readonly #offers = new Map<string, { ip: string; until: number }>(); // by mac
  readonly #declined = new Map<string, number>(); // ip -> until
  readonly #reservedByMac = new Map<string, Reservation>();
  readonly #reservedIps = new Set<string>();
  readonly #start: number;
  readonly #end: number;
  /** Where the next scan for a free address starts. */
  #cursor: number;
  #writing: Promise<void> = Promise.resolve();
  /** A write scheduled but not started yet: later changes ride along with it. */
  #queued: Promise<void> | null = null;

  private constructor(pool: PoolConfig, file: string | null, now: () => number) {
    this.#pool = pool;
    this.#start = ipToNumber(pool.rangeStart);
    this.#end = ipToNumber(pool.rangeEnd);
    this.#cursor = this.#start;
    this.#file = file;
    this.#now = now;
    for (const r of pool.reservations) {
      this.#reservedByMac.set(r.mac.toLowerCase(), r);
      this.#reservedIps.add(r.ip);
    }
  }

  /** Opens the lease database, reloading `file` if it exists (null: in memory only). */
  static async open(
    pool: PoolConfig,
    file: string | null,
    now: () => number = Date.now,
  ): Promise<LeaseDb> {
    const db = new LeaseDb(pool, file, now);
    if (file) await db.#load(file);
    return db;
  }

  async #load(file: string): Promise<void> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if (isErrno(err, "ENOENT")) return;
      throw err;
    }
    let data: LeaseFile;
    try {
      data = JSON.parse(text) as LeaseFile;
      if (data.format !== "inetboot-leases 1") throw new Error("not an inetboot-leases 1 file");
    } catch (err) {
      throw new LeaseFileError(
        `Lease file ${file} is unreadable (${(err as Error).message}); move it away to start with no leases`,
      );
    }
    const now = this.#now();
    for (const lease of data.leases) {
      if (lease.expires > now) this.#setLease(lease);
    }
    for (const d of data.declined) if (d.until > now) this.#declined.set(d.ip, d.until);
  }

  #setLease(lease: Lease): void {
    const old = this.#leases.get(lease.mac);
    if (old && this.#byIp.get(old.ip) === lease.mac) this.#byIp.delete(old.ip);
    this.#leases.set(lease.mac, lease);
    this.#byIp.set(lease.ip, lease.mac);
  }

  inSubnet(ip: string): boolean {
    const mask = ipToNumber(this.#pool.netmask);
    return (ipToNumber(ip) & mask) === (ipToNumber(this.#pool.rangeStart) & mask);
  }

  #inRange(ip: string): boolean {
    const n = ipToNumber(ip);
    return n >= this.#start && n <= this.#end;
  }

  /** Whether `ip` may be given to `mac` right now. */
  #availableTo(ip: string, mac: string): boolean {
    const reservation = this.#reservedByMac.get(mac);
    if (reservation) return reservation.ip === ip;
    if (!this.#inRange(ip) || this.#reservedIps.has(ip)) return false;
    const until = this.#declined.get(ip);
    if (until !== undefined && until > this.#now()) return false;
    const holder = this.#byIp.get(ip);
    if (holder === undefined || holder === mac) return true;
    return !this.#holds(holder, ip);
  }

  /** Whether `mac` still holds `ip` by an unexpired lease or offer. */
  #holds(mac: string, ip: string): boolean {
    const now = this.#now();
    const lease = this.#leases.get(mac);
    if (lease?.ip === ip && lease.expires > now) return true;
    const offer = this.#offers.get(mac);
    return offer?.ip === ip && offer.until > now;
  }

  /** Picks the address to offer: reservation, current lease, the requested one, the first free. */
  offer(mac: string, requested?: string): string | null {
    mac = mac.toLowerCase();
    const candidates: string[] = [];
    const reservation = this.#reservedByMac.get(mac);
    if (reservation) candidates.push(reservation.ip);
    const lease = this.#leases.get(mac);
    if (lease) candidates.push(lease.ip);
    const offered = this.#offers.get(mac);
    if (offered) candidates.push(offered.ip);
    if (requested) candidates.push(requested);
    let ip = candidates.find((c) => this.#availableTo(c, mac));
    if (!ip && !reservation) {
      // Scan from where the last allocation ended (wrapping once): new clients cost O(1)
      // instead of a walk over every address already given out.
      const size = this.#end - this.#start + 1;
      for (let i = 0; i < size; i++) {
        const n = this.#start + ((this.#cursor - this.#start + i) % size);
        const candidate = numberToIp(n);
        if (this.#availableTo(candidate, mac)) {
          ip = candidate;
          this.#cursor = n + 1 > this.#end ? this.#start : n + 1;
          break;
        }
      }
    }
    if (!ip) return null;
    const holdMs = (this.#pool.offerHoldSeconds ?? 60) * 1000;
    this.#offers.set(mac, { ip, until: this.#now() + holdMs });
    this.#byIp.set(ip, mac);
    return ip;
  }

  /** The hostname reserved for a MAC, if any. */
  reservation(mac: string): Reservation | undefined {
    return this.#reservedByMac.get(mac.toLowerCase());
  }

  /**
   * Binds `ip` to `mac` (a REQUEST). Returns the lease, persisted, or null when the address is
   * not this client's to have (the caller NAKs).
   */
  async commit(mac: string, ip: string, hostname?: string): Promise<Lease | null> {
    mac = mac.toLowerCase();
    if (!this.#availableTo(ip, mac)) return null;
    // A MAC holding a valid lease is not moved to another address by a REQUEST alone (a
    // spoofed one would carry the machine's identity to the spoofer's address): only to the
    // address this server offered it (a reservation that changed, a pool that moved).
    const held = this.#leases.get(mac);
    const offered = this.#offers.get(mac);
    if (
      held &&
      held.ip !== ip &&
      held.expires > this.#now() &&
      !(offered?.ip === ip && offered.until > this.#now())
    ) {
      return null;
    }
    const lease: Lease = {
      mac,
      ip,
      expires: this.#now() + this.#pool.leaseSeconds * 1000,
      hostname: hostname ?? this.#reservedByMac.get(mac)?.hostname,
    };
    this.#offers.delete(mac);
    this.#setLease(lease);
    await this.#persist();
    return lease;
  }

  /** The client gave the address back (RELEASE). */
  async release(mac: string, ip: string): Promise<boolean> {
    mac = mac.toLowerCase();
    const lease = this.#leases.get(mac);
    if (lease?.ip !== ip) return false;
    this.#leases.delete(mac);
    if (this.#byIp.get(ip) === mac) this.#byIp.delete(ip);
    await this.#persist();
    return true;
  }

  /** The client found the address in use (DECLINE): keep it out of the pool for a while. */
  async decline(mac: string, ip: string): Promise<void> {
    mac = mac.toLowerCase();
    const lease = this.#leases.get(mac);
    if (lease?.ip === ip) this.#leases.delete(mac);
    this.#offers.delete(mac);
    if (this.#byIp.get(ip) === mac) this.#byIp.delete(ip);
    this.#declined.set(ip, this.#now() + (this.#pool.declineHoldSeconds ?? 600) * 1000);
    await this.#persist();
  }

  /** The MAC holding an unexpired lease of `ip` (offers do not count), if any. */
  holderOf(ip: string): string | undefined {
    const mac = this.#byIp.get(ip);
    const lease = mac === undefined ? undefined : this.#leases.get(mac);
    return lease?.ip === ip && lease.expires > this.#now() ? mac : undefined;
  }

  /** The address `mac` holds an unexpired lease of, if any. */
  addressOf(mac: string): string | undefined {
    const lease = this.#leases.get(mac.toLowerCase());
    return lease && lease.expires > this.#now() ? lease.ip : undefined;
  }

  leases(): Lease[] {
    const now = this.#now();
    return [...this.#leases.values()].filter((l) => l.expires > now);
  }

  /**
   * Writes the file. Writes never overlap, and changes made while one is under way are written
   * together by the next one (under load, one fsync covers many ACKs); each caller resolves once
   * a write that includes its change is on disk.
   */
  #persist(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    if (this.#queued) return this.#queued;
    const write = async (): Promise<void> => {
      this.#queued = null;
      const now = this.#now();
      const data: LeaseFile = {
        format: "inetboot-leases 1",
        leases: this.leases(),
        declined: [...this.#declined]
          .filter(([, until]) => until > now)
          .map(([ip, until]) => ({ ip, until })),
      };
      await writeFileAtomic(file, JSON.stringify(data) + "\n");
    };
    this.#queued = this.#writing.then(write, write);
    this.#writing = this.#queued;
    return this.#queued;
  }
}
