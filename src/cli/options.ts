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

/** Parses 10G, 512M, 1048576. */
export function parseBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m)
    throw new Error(
      `Cannot parse size "${text}": expected a number with an optional K, M, G or T suffix`,
    );
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[
    m[2].toUpperCase() as "" | "K" | "M" | "G" | "T"
  ];
  return Math.round(Number(m[1]) * unit);
}
