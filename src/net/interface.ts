// Network interfaces: addresses, and tying a UDP socket to one interface (SO_BINDTOIFINDEX)
// so a server only hears and answers broadcasts on the interface it was configured for.
import type { Socket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { networkInterfaces } from "node:os";

const SOL_SOCKET = 1;
const SO_BINDTOIFINDEX = 62;

type SetSockOpt = (
  socket: { _handle: { fd: number } },
  level: number,
  name: number,
  value: number,
) => void;

let setsockopt: SetSockOpt | null | undefined;

function loadSetsockopt(): SetSockOpt | null {
  if (setsockopt === undefined) {
    try {
      const require = createRequire(import.meta.url);
      setsockopt = (require("sockopt") as { setsockopt: SetSockOpt }).setsockopt;
    } catch {
      setsockopt = null;
    }
  }
  return setsockopt;
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
 * Restricts a bound UDP socket to one interface. Returns false when the platform cannot (no
 * native sockopt binding): the caller should warn that other interfaces are heard too.
 */
export function bindToInterface(socket: Socket, name: string): boolean {
  const set = loadSetsockopt();
  if (!set) return false;
  set({ _handle: { fd: socketFd(socket) } }, SOL_SOCKET, SO_BINDTOIFINDEX, interfaceIndex(name));
  return true;
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
