// What kind of network-boot firmware sent a DHCP request: option 93 (the IANA "Processor
// Architecture Types" registry, RFC 4578 + later assignments), option 60 (PXEClient /
// HTTPClient) and iPXE's own marks (user class 77 "iPXE", encapsulated options 175).
import { clientArchs, clientUuid, Opt, optString, subOptions, userClasses } from "./packet.ts";
import type { DhcpPacket } from "./packet.ts";

export type FirmwareKind = "bios" | "uefi" | "uboot" | "openfirmware" | "s390" | "rpiboot";

export interface ArchType {
  code: number;
  /** iPXE's ${buildarch}-style CPU name. */
  cpu: string;
  firmware: FirmwareKind;
  /** The code means "boot from HTTP" (UEFI HTTP Boot and friends). */
  http: boolean;
  description: string;
}

function a(
  code: number,
  cpu: string,
  firmware: FirmwareKind,
  http: boolean,
  description: string,
): ArchType {
  return { code, cpu, firmware, http, description };
}

/** The IANA Processor Architecture Types registry (DHCP option 93), codes 0–41. */
export const ARCH_TYPES: readonly ArchType[] = Object.freeze([
  a(0, "i386", "bios", false, "x86 BIOS"),
  a(1, "i386", "bios", false, "NEC/PC98 (deprecated)"),
  a(2, "ia64", "uefi", false, "Itanium"),
  a(3, "alpha", "bios", false, "DEC Alpha (deprecated)"),
  a(4, "i386", "bios", false, "Arc x86 (deprecated)"),
  a(5, "i386", "bios", false, "Intel Lean Client (deprecated)"),
  a(6, "i386", "uefi", false, "x86 UEFI"),
  a(7, "x86_64", "uefi", false, "x64 UEFI"),
  a(8, "xscale", "uefi", false, "EFI Xscale (deprecated)"),
  a(9, "x86_64", "uefi", false, "EBC (used by x64 UEFI firmware)"),
  a(10, "arm32", "uefi", false, "ARM 32-bit UEFI"),
  a(11, "arm64", "uefi", false, "ARM 64-bit UEFI"),
  a(12, "ppc", "openfirmware", false, "PowerPC Open Firmware"),
  a(13, "ppc", "openfirmware", false, "PowerPC ePAPR"),
  a(14, "ppc64", "openfirmware", false, "POWER OPAL v3"),
  a(15, "i386", "uefi", true, "x86 UEFI HTTP boot"),
  a(16, "x86_64", "uefi", true, "x64 UEFI HTTP boot"),
  a(17, "ebc", "uefi", true, "EBC UEFI HTTP boot"),
  a(18, "arm32", "uefi", true, "ARM 32-bit UEFI HTTP boot"),
  a(19, "arm64", "uefi", true, "ARM 64-bit UEFI HTTP boot"),
  a(20, "i386", "bios", true, "x86 BIOS HTTP boot"),
  a(21, "arm32", "uboot", false, "ARM 32-bit U-Boot"),
  a(22, "arm64", "uboot", false, "ARM 64-bit U-Boot"),
  a(23, "arm32", "uboot", true, "ARM 32-bit U-Boot HTTP boot"),
  a(24, "arm64", "uboot", true, "ARM 64-bit U-Boot HTTP boot"),
  a(25, "riscv32", "uefi", false, "RISC-V 32-bit UEFI"),
  a(26, "riscv32", "uefi", true, "RISC-V 32-bit UEFI HTTP boot"),
  a(27, "riscv64", "uefi", false, "RISC-V 64-bit UEFI"),
  a(28, "riscv64", "uefi", true, "RISC-V 64-bit UEFI HTTP boot"),
  a(29, "riscv128", "uefi", false, "RISC-V 128-bit UEFI"),
  a(30, "riscv128", "uefi", true, "RISC-V 128-bit UEFI HTTP boot"),
  a(31, "s390", "s390", false, "s390 Basic"),
  a(32, "s390", "s390", false, "s390 Extended"),
  a(33, "mips32", "uefi", false, "MIPS 32-bit UEFI"),
  a(34, "mips64", "uefi", false, "MIPS 64-bit UEFI"),
  a(35, "sunway32", "uefi", false, "Sunway 32-bit UEFI"),
  a(36, "sunway64", "uefi", false, "Sunway 64-bit UEFI"),
  a(37, "loong32", "uefi", false, "LoongArch 32-bit UEFI"),
  a(38, "loong32", "uefi", true, "LoongArch 32-bit UEFI HTTP boot"),
  a(39, "loong64", "uefi", false, "LoongArch 64-bit UEFI"),
  a(40, "loong64", "uefi", true, "LoongArch 64-bit UEFI HTTP boot"),
  a(41, "arm32", "rpiboot", false, "ARM rpiboot"),
]);

export interface Firmware {
  /** Option 93 code (first one if several; 0 when absent, as PXE says). */
  arch: number;
  cpu: string;
  kind: FirmwareKind;
  description: string;
  /** Option 60 starts with PXEClient (a PXE ROM or iPXE) */
  pxe: boolean;
  /** UEFI HTTP Boot: option 60 HTTPClient or an HTTP arch code; wants an http:// URL. */
  http: boolean;
  /** iPXE (user class "iPXE" or options 175): give it the HTTP script, not a first stage. */
  ipxe: boolean;
  /** Network-boot firmware at all (PXE, HTTP boot or iPXE), as opposed to an OS's DHCP client. */
  netboot: boolean;
  uuid?: string;
  vendorClass?: string;
  userClasses: string[];
}

/** The short key used for first stages and matching: "bios", "uefi-x86_64", "uefi-arm64", ... */
export function firmwareKey(fw: Pick<Firmware, "kind" | "cpu">): string {
  return fw.kind === "bios" ? "bios" : `${fw.kind}-${fw.cpu}`;
}

export function archType(code: number): ArchType {
  return ARCH_TYPES[code] ?? a(code, "unknown", "uefi", false, `unassigned architecture ${code}`);
}

export function classifyFirmware(p: DhcpPacket): Firmware {
  const vendorClass = optString(p, Opt.VENDOR_CLASS);
  const classes = userClasses(p);
  const archs = clientArchs(p);
  // PXEClient:Arch:00007:UNDI:003016 carries the arch too when option 93 is missing.
  const vciArch = /^(?:PXE|HTTP)Client:Arch:(\d{5})/.exec(vendorClass ?? "");
  const code = archs[0] ?? (vciArch ? Number(vciArch[1]) : 0);
  const type = archType(code);
  const pxe = vendorClass?.startsWith("PXEClient") ?? false;
  const httpClient = vendorClass?.startsWith("HTTPClient") ?? false;
  const ipxe = classes.includes("iPXE") || subOptions(p.options.get(Opt.IPXE_ENCAP)).size > 0;
  return {
    arch: code,
    cpu: type.cpu,
    kind: type.firmware,
    description: type.description,
    pxe,
    http: httpClient || (type.http && !ipxe),
    ipxe,
    netboot: pxe || httpClient || ipxe,
    uuid: clientUuid(p),
    vendorClass,
    userClasses: classes,
  };
}
