// Retrying with exponential backoff and jitter: one policy for every HTTP client here.

/** Thrown by an attempt to ask for another try; its message says what went wrong. */
export class RetryableError extends Error {}

/** Thrown when every attempt failed; `problem` describes the last failure. */
export class RetriesExhaustedError extends Error {
  readonly problem: string;
  constructor(attempts: number, problem: string) {
    super(`failed after ${attempts} attempts: ${problem}`);
    this.problem = problem;
  }
}

/**
 * Runs `attempt` until it returns, waiting `backoffMs`, then twice as long each time (±25%)
 * between tries. A thrown error counts as a failed try (RetryableError, network errors) unless
 * `isFinal` says it cannot mend itself; then it is rethrown at once.
 */
export async function withBackoff<T>(
  attempt: () => Promise<T>,
  options: { attempts: number; backoffMs: number; isFinal?: (err: unknown) => boolean },
): Promise<T> {
  let problem = "";
  for (let i = 0; i < options.attempts; i++) {
    if (i > 0) {
      const delay = options.backoffMs * 2 ** (i - 1) * (0.75 + Math.random() / 2);
      await new Promise((r) => setTimeout(r, delay));
    }
    try {
      return await attempt();
    } catch (err) {
      if (options.isFinal?.(err)) throw err;
      problem =
        err instanceof RetryableError
          ? err.message
          : err instanceof Error
            ? `${(err as NodeJS.ErrnoException).code ?? err.name}: ${err.message}`
            : String(err);
    }
  }
  throw new RetriesExhaustedError(options.attempts, problem);
}
