// The error a live ISO that cannot be booted as configured fails with.

/** The ISO cannot be booted as configured: the message says why and what the ISO holds. */
export class LiveIsoError extends Error {
  readonly found: string[];
  constructor(message: string, found: string[] = []) {
    super(message);
    this.found = found;
  }
}
