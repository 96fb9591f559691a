// Structured logging (pino). Servers log events as objects; only the CLI prints prose.
import { pino } from "pino";
import type { Logger } from "pino";

export type { Logger };

/** A logger writing JSON lines to stderr at $INETBOOT_LOG_LEVEL (default "info"). */
export function createLogger(name: string): Logger {
  return pino({ name, level: process.env.INETBOOT_LOG_LEVEL ?? "info" }, pino.destination(2));
}

/** A logger that drops everything (tests, library use without logging). */
export const silentLogger: Logger = pino({ level: "silent" });
