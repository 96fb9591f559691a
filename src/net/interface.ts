// Network interfaces: addresses, and tying a UDP socket to one interface (SO_BINDTOIFINDEX)
// so a server only hears and answers broadcasts on the interface it was configured for.
import type { Socket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { getAsset, isSea } from "node:sea";

const SOL_SOCKET = 1;
const SO_BINDTOIFINDEX = 62;

type SetSockOpt = (
  socket: { _handle: { fd: number } },
  level: number,
  name: number,
  value: number,
) => void;

let setsockopt: SetSockOpt | null | undefined;
/** Why the binding could not be loaded (said in bindToInterface's answer). */
let loadError = "";

function loadSetsockopt(): SetSockOpt | null {
  if (setsockopt === undefined) {
    try {
      setsockopt = isSea() ? bundledSetsockopt() : requireSetsockopt();
    } catch (err) {
      setsockopt = null;
      loadError = (err as Error).message;
    }
  }
  return setsockopt;
}

function requireSetsockopt(): SetSockOpt {
  const require = createRequire(import.meta.url);
  return (require("sockopt") as { setsockopt: SetSockOpt }).setsockopt;
}

/**
 * The single executable carries sockopt's N-API binding as an asset: it is written to a fresh
 * private folder (never a guessable shared path another user could plant a file at), loaded,
 * and removed again (the loaded library stays mapped). A noexec /tmp (containers' --tmpfs,
 * hardened hosts) cannot load it: the service's cache and runtime folders are tried too.
 */
function bundledSetsockopt(): SetSockOpt {
  const bases = [
    tmpdir(),
    process.env.RUNTIME_DIRECTORY,
    process.env.CACHE_DIRECTORY,
    process.env.STATE_DIRECTORY,
  ];
  const failures: string[] = [];
  for (const base of bases) {
    if (!base) continue;
    try {
      return loadBindingIn(base.split(":")[0]);
    } catch (err) {
      failures.push(`${base}: ${(err as Error).message}`);
    }
  }
  throw new Error(`cannot load the bundled sockopt binding (${failures.join("; ")})`);
}

function loadBindingIn(base: string): SetSockOpt {
  const dir = mkdtempSync(join(base, "inetboot-"));
  const file = join(dir, "sockopt.node");
  try {
    writeFileSync(file, Buffer.from(getAsset("sockopt.node")), { mode: 0o500 });
    const binding = {
      exports: {} as { setsockopt?: (fd: number, l: number, n: number, v: number) => void },
    };
    process.dlopen(binding, file);
    const set = binding.exports.setsockopt;
    if (typeof set !== "function") throw new Error("sockopt binding has no setsockopt");
    return (socket, level, name, value) => set(socket._handle.fd, level, name, value);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export class InterfaceError extends Error {}

/** The kernel's index of a network interface. */
export function interfaceIndex(name: string): number {
  if (!/^[\w.@-]{1,15}$/.test(name)) throw new InterfaceError(`"${name}" is not an interface name`);
  try {
    return Number(readFileSync(`/sys/class/net/${name}/ifindex`, "utf8").trim());
  } catch {
    const names = Object.keys(networkInterfaces()).join(", ");
    throw new InterfaceError(
      `Network interface "${name}" does not exist (this host has: ${names}); set listen.interface`,
    );
  }
}

/** The first IPv4 address of an interface, with its netmask. */
export function interfaceAddress(name: string): { address: string; netmask: string } | undefined {
  const info = networkInterfaces()[name]?.find((i) => i.family === "IPv4");
  return info ? { address: info.address, netmask: info.netmask } : undefined;
}

/** The file descriptor under a bound dgram socket (Node keeps it in an internal state symbol). */
function socketFd(socket: Socket): number {
  for (const sym of Object.getOwnPropertySymbols(socket)) {
    const state = (socket as unknown as Record<symbol, { handle?: { fd?: number } } | undefined>)[
      sym
    ];
    const fd = state?.handle?.fd;
    if (typeof fd === "number" && fd >= 0) return fd;
  }
  throw new InterfaceError("socket has no file descriptor yet (bind it first)");
}

/**
 * Restricts a bound UDP socket to one interface. Returns null when it is tied, else why not (no
 * native sockopt binding on this platform, or the kernel refused: before Linux 5.0 there is no
 * SO_BINDTOIFINDEX, before 5.7 it needs CAP_NET_RAW): the caller should warn that other
 * interfaces are heard too. It never throws for the socket: a server goes on, heard more widely.
 */
export function bindToInterface(socket: Socket, name: string): string | null {
  const set = loadSetsockopt();
  if (!set)
    return `no native sockopt binding on this platform${loadError ? ` (${loadError})` : ""}`;
  try {
    set({ _handle: { fd: socketFd(socket) } }, SOL_SOCKET, SO_BINDTOIFINDEX, interfaceIndex(name));
    return null;
  } catch (err) {
    if (err instanceof InterfaceError) return err.message;
    return `the kernel refused SO_BINDTOIFINDEX: ${(err as Error).message}`;
  }
}

/** Binds a UDP socket, rejecting with the bind error (EADDRINUSE, EACCES) instead of emitting it. */
export function bindUdp(socket: Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, address, () => {
      socket.off("error", reject);
      resolve();
    });
  });
}
