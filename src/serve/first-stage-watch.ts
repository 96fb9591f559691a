// Which loader a boot file is, and the machines whose iPXE first stage never ran: UEFI firmware
// with Secure Boot on fetches unsigned ipxe.efi, refuses it ("Access Denied") and either asks
// DHCP again (its next boot option) or stops. Either way nothing tells the server, so it
// watches: a UEFI machine whose last event is that transfer, when its firmware asks again or
// when iPXE has not asked for its script within `graceMs`, gets a timeline event saying what to
// configure.
import type { EventInput, MachineRecord } from "./events.ts";

/** The loader a boot file is, for the machine's record ("iPXE", "GRUB", "shim → GRUB"). */
export function loaderOfFile(file: string | undefined): string | undefined {
  if (!file) return undefined;
  if (/^shim\w*\.efi$/.test(file)) return "shim → GRUB";
  if (/^grub\w*\.efi$/.test(file)) return "GRUB";
  if (/(?:ipxe|undionly|snponly)[\w.-]*\.(?:efi|kk?pxe|pxe)$/.test(file)) return "iPXE";
  return undefined;
}

/** Machines watched at once (a flood of transfers cannot grow this without bound). */
const MAX_WATCHED = 4096;

export class FirstStageWatch {
  readonly #machine: (mac: string) => MachineRecord | undefined;
  readonly #record: (input: EventInput) => void;
  readonly #graceMs: number;
  readonly #timers = new Map<string, NodeJS.Timeout>();

  constructor(o: {
    machine: (mac: string) => MachineRecord | undefined;
    record: (input: EventInput) => void;
    graceMs?: number;
  }) {
    this.#machine = o.machine;
    this.#record = o.record;
    this.#graceMs = o.graceMs ?? 30_000;
  }

  /** A TFTP transfer ended: an iPXE first stage sent to a UEFI machine is watched. */
  transferDone(mac: string | undefined, file: string): void {
    if (!mac || loaderOfFile(file) !== "iPXE") return;
    if (this.#machine(mac)?.firmware?.kind !== "uefi") return;
    clearTimeout(this.#timers.get(mac));
    this.#timers.delete(mac);
    if (this.#timers.size >= MAX_WATCHED) return;
    const timer = setTimeout(() => {
      this.#timers.delete(mac);
      this.#check(mac, `iPXE has not asked for its script within ${this.#graceMs / 1000} s`);
    }, this.#graceMs);
    timer.unref();
    this.#timers.set(mac, timer);
  }

  /** The machine's firmware (not iPXE) asks DHCP for a boot file. */
  firmwareAsked(mac: string): void {
    this.#check(mac, "its firmware asked DHCP again without running it");
  }

  #check(mac: string, what: string): void {
    const m = this.#machine(mac);
    // Anything since the transfer (iPXE's DHCP, a plan) means it ran.
    if (m?.firmware?.kind !== "uefi" || m.lastStage !== "tftp-done") return;
    if (loaderOfFile(m.lastFile) !== "iPXE") return;
    clearTimeout(this.#timers.get(mac));
    this.#timers.delete(mac);
    this.#record({
      stage: "first-stage-refused",
      mac,
      file: m.lastFile,
      detail: `${mac} fetched ${m.lastFile} but ${what}: UEFI Secure Boot refuses unsigned iPXE. Give it the signed chain — machines: [{ match: { mac: "${mac}" }, boot: ENTRY, loader: shim }] or loaders: { uefi-${m.firmware.cpu}: shim } — or turn Secure Boot off`,
    });
  }

  close(): void {
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }
}
