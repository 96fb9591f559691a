// DHCP packets captured from real clients and servers (test/fixtures/dhcp/*.hex).
import { readdirSync, readFileSync } from "node:fs";

const DIR = new URL("fixtures/dhcp/", import.meta.url);

export function dhcpFixture(name: string): Buffer {
  const text = readFileSync(new URL(`${name}.hex`, DIR), "utf8");
  return Buffer.from(text.replace(/\s/g, ""), "hex");
}

export function allDhcpFixtures(): [string, Buffer][] {
  return readdirSync(DIR)
    .filter((f) => f.endsWith(".hex"))
    .map((f) => [f.slice(0, -4), dhcpFixture(f.slice(0, -4))]);
}
