// iPXE scripts: the generic /boot.ipxe that reports who is asking, and one script per entry
// kind (kernel, image, iso, menu, chain, sanboot, local, shell).
import type { Entry } from "./config.ts";

/** What iPXE reports about itself; the rest of the query becomes labels. */
export const IPXE_FACTS = ["mac", "uuid", "buildarch", "platform", "asset", "hostname", "serial"];

const REPORT =
  "mac=${netX/mac:hexhyp}&uuid=${uuid}&buildarch=${buildarch}&platform=${platform}" +
  "&asset=${asset:uristring}&hostname=${hostname:uristring}&serial=${serial:uristring}";

/** Text on one line with no iPXE expansion: titles and messages from the config. */
function line(text: string): string {
  return text.replace(/[\r\n\t]+/g, " ").replace(/\$\{/g, "$ {");
}

function labelQuery(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `&${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join("");
}

/** The first script: chains to the per-machine plan with iPXE's facts in the query. */
export function bootScript(base: string, labels: Record<string, string>): string {
  return `#!ipxe\necho inetboot: asking ${line(base)} for this machine's boot plan\nchain --autofree ${base}/ipxe/boot?${REPORT}${labelQuery(labels)} || goto failed\nexit\n:failed\necho inetboot: could not reach the boot server; dropping to the iPXE shell\nshell\n`;
}

export interface ScriptContext {
  base: string;
  /** The query string (without "?") identifying the machine, passed on to files and entries. */
  query: string;
  /** Titles of the entries a menu lists. */
  titleOf: (name: string) => string;
  /** Added to a kernel's command line (an image entry's nbdroot=). */
  rootCmdline?: string;
  /** Initrds the server adds after the entry's own (the NBD overlay). */
  extraInitrds?: number;
  /** An ISO entry's boot: how many initrds its recipe has and its command line with URLs. */
  iso?: { initrds: number; cmdline: string; sanboot?: string };
}

/** A script that shows why a machine cannot boot and stops in the iPXE shell. */
export function errorScript(message: string): string {
  return `#!ipxe
echo inetboot: ${line(message)}
echo inetboot: dropping to the iPXE shell (type exit to go on)
shell
`;
}

/** Says why the machine waits, then asks `url` again after `seconds`. */
export function waitScript(message: string, url: string, seconds: number): string {
  return `#!ipxe
echo inetboot: ${line(message)}; asking again in ${seconds} s
sleep ${seconds}
chain --replace --autofree ${url.replaceAll("$", "%24")}
`;
}

const FAILED = (what: string): string =>
  `goto end\n:failed\necho inetboot: ${line(what)} failed; dropping to the iPXE shell (type exit to go on)\nshell\n:end\n`;

/** Boots /files/ENTRY/kernel with `count` initrds (named so EFI stubs find them). */
function kernelScript(entry: Entry, count: number, cmdlines: string[], ctx: ScriptContext): string {
  const q = ctx.query ? `?${ctx.query}` : "";
  const name = encodeURIComponent(entry.name);
  const initrdNames = Array.from({ length: count }, (_, i) => `initrd${i}.img`);
  const cmdline = [...initrdNames.map((n) => `initrd=${n}`), ...cmdlines.map(line)]
    .filter(Boolean)
    .join(" ");
  const initrds = initrdNames
    .map((n, i) => `initrd --name ${n} ${ctx.base}/files/${name}/initrd/${i}${q} || goto failed\n`)
    .join("");
  return (
    `#!ipxe\n` +
    `echo inetboot: booting ${line(entry.title)}\n` +
    `kernel ${ctx.base}/files/${name}/kernel${q} ${cmdline} || goto failed\n` +
    initrds +
    `boot || goto failed\n` +
    FAILED(`booting ${entry.name}`)
  );
}

export function entryScript(entry: Entry, ctx: ScriptContext): string {
  const head = `#!ipxe\n`;
  const q = ctx.query ? `?${ctx.query}` : "";
  switch (entry.kind) {
    case "kernel":
    case "image":
      return kernelScript(
        entry,
        entry.initrd.length + (ctx.extraInitrds ?? 0),
        [entry.cmdline, ctx.rootCmdline ?? ""],
        ctx,
      );
    case "iso":
      if (!ctx.iso) return errorScript(`${entry.name}: the ISO is not open`);
      if (ctx.iso.sanboot) {
        // No recipe: iPXE reads the ISO by Range and boots its own El Torito record.
        return (
          head +
          `echo Booting ${line(entry.title)} from its own boot record (sanboot)\n` +
          `sanboot --no-describe ${ctx.iso.sanboot} || goto failed\n` +
          FAILED(`sanboot ${ctx.iso.sanboot}`)
        );
      }
      return kernelScript(entry, ctx.iso.initrds, [ctx.iso.cmdline], ctx);
    case "menu": {
      const items = entry.items.map((i) => `item ${i} ${line(ctx.titleOf(i))}\n`).join("");
      const def = entry.defaultItem ?? entry.items[0];
      return (
        head +
        `:start\nmenu ${line(entry.title)}\n${items}` +
        `choose --timeout ${entry.timeoutSeconds * 1000} --default ${def} selected || goto cancel\n` +
        `chain --autofree ${ctx.base}/ipxe/entry/\${selected}${q} || goto failed\n` +
        `goto start\n:cancel\necho inetboot: menu cancelled\nexit\n` +
        FAILED("the chosen entry")
      );
    }
    case "chain":
      return (
        head + `chain --autofree ${entry.url} || goto failed\n` + FAILED(`chaining ${entry.url}`)
      );
    case "sanboot":
      return head + `sanboot ${entry.url} || goto failed\n` + FAILED(`sanboot ${entry.url}`);
    case "local":
      return head + `echo inetboot: booting from the local disk\nexit\n`;
    case "shell":
      return head + `shell\n`;
  }
}
