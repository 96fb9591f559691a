// GRUB configurations: the bootstrap every network GRUB reads at $prefix/grub.cfg (the same path
// for every machine), which asks for the machine's own plan with GRUB's facts in the path, and
// the rendering of a boot plan (boot-plan.ts) into GRUB's script. The only place that knows GRUB
// syntax. Debian's signed GRUB reads files over TFTP only (no http module, no insmod under
// Secure Boot), so every file a plan names is fetched by TFTP at its HTTP path on this server.
import type { BootPlan } from "./boot-plan.ts";

/** The TFTP path of a machine's plan; GRUB fills in the facts (like iPXE's boot script). */
export const GRUB_PLAN_PATH = "/inetboot/grub/boot";
export const GRUB_ENTRY_PATH = "/inetboot/grub/entry/";
const GRUB_FACTS = "mac=${net_default_mac}&buildarch=${grub_cpu}&platform=${grub_platform}";

/** A word in single quotes: GRUB expands nothing in it (a quote is closed, escaped, reopened). */
export function grubWord(text: string): string {
  return `'${text.replace(/[\r\n\t]+/g, " ").replace(/'/g, "'\\''")}'`;
}

const say = (text: string): string => `echo ${grubWord(`inetboot: ${text}`)}\n`;

/** The config served at every $prefix/grub.cfg: report who is asking, load its own plan. */
export function grubBootstrap(): string {
  return (
    "# inetboot: every machine reads this; its own plan comes next.\n" +
    say("asking the boot server for the boot plan of this machine") +
    `configfile "${GRUB_PLAN_PATH}?${GRUB_FACTS}"\n` +
    say("could not get the boot plan of this machine over TFTP (see the server log)")
  );
}

export interface GrubPaths {
  /** The HTTP base of the plan's URLs: those under it are fetched by TFTP at the same path. */
  base: string;
  /** The query that identifies the machine to the configs a menu offers (without "?"). */
  query: string;
}

/** A plan URL as a TFTP path on this server, or null (GRUB cannot fetch it). */
function tftpPath(url: string, base: string): string | null {
  return url.startsWith(`${base}/`) ? url.slice(base.length) : null;
}

const cannot = (what: string): string =>
  say(`${what}; boot this machine with loader: ipxe (Secure Boot off) or pick another entry`) +
  say("the GRUB command line follows");

/** The plan as a GRUB script. */
export function renderGrub(plan: BootPlan, paths: GrubPaths): string {
  const head = "# inetboot: this machine's boot plan\n";
  switch (plan.kind) {
    case "kernel": {
      const files = [plan.kernel, ...plan.initrds].map((u) => tftpPath(u, paths.base));
      if (files.some((f) => f === null))
        return head + cannot(`${plan.entry} names files off this server, which GRUB cannot fetch`);
      const [kernel, ...initrds] = files as string[];
      const args = plan.cmdline.split(/\s+/).filter(Boolean).map(grubWord).join(" ");
      const initrd = initrds.length ? `initrd ${initrds.map(grubWord).join(" ")}` : "true";
      return (
        head +
        say(`booting ${plan.title}`) +
        `if linux ${grubWord(kernel)} ${args}; then\n  if ${initrd}; then\n    boot\n  fi\nfi\n` +
        say(`booting ${plan.entry} failed (see the messages above and the server log)`) +
        say("the GRUB command line follows")
      );
    }
    case "menu": {
      const q = paths.query ? `?${paths.query}` : "";
      const items = plan.items
        .map(
          (i) =>
            `menuentry ${grubWord(i.title)} --id ${grubWord(i.name)} {\n` +
            `  configfile ${grubWord(`${GRUB_ENTRY_PATH}${encodeURIComponent(i.name)}${q}`)}\n}\n`,
        )
        .join("");
      // iPXE's --timeout 0 waits for a choice; GRUB's -1 does.
      const timeout = plan.timeoutSeconds > 0 ? plan.timeoutSeconds : -1;
      return (
        head +
        `set timeout=${timeout}\nset default=${grubWord(plan.defaultItem)}\n` +
        say(plan.title) +
        items
      );
    }
    case "chain":
      return head + cannot(`GRUB cannot chain ${plan.url} (it is an iPXE chain)`);
    case "sanboot":
      return head + cannot(`GRUB cannot boot ${plan.url} as a CD-ROM (an iPXE sanboot)`);
    case "local":
      return head + say("booting from the local disk") + "exit\n";
    case "shell":
      return head + say("the GRUB command line follows");
    case "exit":
      return head + (plan.message ? say(plan.message) : "") + "exit\n";
    case "error":
      return head + say(plan.message) + say("the GRUB command line follows");
    case "wait": {
      const again = tftpPath(plan.url, paths.base);
      return (
        head +
        say(`${plan.message}; asking again in ${plan.seconds} s`) +
        `sleep ${plan.seconds}\n` +
        (again ? `configfile ${grubWord(again)}\n` : say("cannot ask again over TFTP"))
      );
    }
  }
}
