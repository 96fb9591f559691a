// Bytes of requests being served, capped: a request that would pass the cap waits until others
// finish (one request is always let through, however large, so nothing waits forever). Used
// per server, and per connection where replies piling up unsent also make new requests wait.

/** Replies waiting in a socket's buffer: while congested, no new request is taken. */
export interface Congestion {
  congested(): boolean;
  /** Calls `wake` once the congestion is relieved (the socket drained). */
  onRelief(wake: () => void): void;
}

export class InFlightBudget {
  readonly #max: number;
  readonly #congestion: Congestion | undefined;
  #bytes = 0;
  #waiters: (() => void)[] = [];

  constructor(max: number, congestion?: Congestion) {
    this.#max = max;
    this.#congestion = congestion;
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Waits while others hold bytes and `bytes` more would pass the cap (or replies pile up). */
  async acquire(bytes: number): Promise<void> {
    while (
      this.#bytes > 0 &&
      (this.#bytes + bytes > this.#max || (this.#congestion?.congested() ?? false))
    ) {
      await new Promise<void>((r) => this.#waiters.push(r));
    }
    this.#bytes += bytes;
  }

  release(bytes: number): void {
    this.#bytes -= bytes;
    const wake = (): void => {
      for (const w of this.#waiters.splice(0)) w();
    };
    // Let the socket drain before taking more work when replies pile up unsent.
    if (this.#congestion?.congested()) this.#congestion.onRelief(wake);
    else wake();
  }
}
