// Where an NBD server listens (`unix:PATH` or `tcp:HOST:PORT`) and the URI clients use for one
// of its exports there.

/** Where to listen: `unix:PATH` or `tcp:HOST:PORT` (see parseListen). */
export type ListenAddress = { path: string } | { host: string; port: number };

export function parseListen(text: string): ListenAddress {
  if (text.startsWith("unix:")) return { path: text.slice(5) };
  const m = /^(?:tcp:)?(\[[^\]]+\]|[^:]+):(\d+)$/.exec(text);
  if (!m)
    throw new Error(`Cannot parse listen address "${text}": expected unix:PATH or tcp:HOST:PORT`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** The NBD URI clients use for an export at an address (nbd://, nbd+unix://). */
export function nbdUri(address: ListenAddress, exportName: string): string {
  const name = encodeURIComponent(exportName);
  if ("path" in address) return `nbd+unix:///${name}?socket=${address.path}`;
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}
