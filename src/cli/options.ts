// Option parsers shared by the commands.
import { InvalidArgumentError } from "commander";

/** Commander accumulator for repeatable options (--store A --store B). */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new InvalidArgumentError("expected a positive whole number");
  return n;
}
