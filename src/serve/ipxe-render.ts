// iPXE scripts: the generic /boot.ipxe that reports who is asking, and the rendering of a boot
// plan (boot-plan.ts) into iPXE's language. The only place that knows iPXE syntax.
import type { BootPlan } from "./boot-plan.ts";

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

const FAILED = (what: string): string =>
  `goto end\n:failed\necho inetboot: ${line(what)} failed; dropping to the iPXE shell (type exit to go on)\nshell\n:end\n`;

/** The plan as an iPXE script. */
export function renderIpxe(plan: BootPlan): string {
  const head = "#!ipxe\n";
  switch (plan.kind) {
    case "kernel": {
      const names = plan.initrds.map((_, i) => `initrd${i}.img`);
      const cmdline = [...names.map((n) => `initrd=${n}`), line(plan.cmdline)]
        .filter(Boolean)
        .join(" ");
      const initrds = plan.initrds
        .map((url, i) => `initrd --name ${names[i]} ${url} || goto failed\n`)
        .join("");
      return (
        head +
        `echo inetboot: booting ${line(plan.title)}\n` +
        `kernel ${plan.kernel} ${cmdline} || goto failed\n` +
        initrds +
        `boot || goto failed\n` +
        FAILED(`booting ${plan.entry}`)
      );
    }
    case "menu": {
      const items = plan.items.map((i) => `item ${i.name} ${line(i.title)}\n`).join("");
      return (
        head +
        `:start\nmenu ${line(plan.title)}\n${items}` +
        `choose --timeout ${plan.timeoutSeconds * 1000} --default ${plan.defaultItem} selected || goto cancel\n` +
        `chain --autofree ${plan.entryUrl.replace("{name}", "${selected}")} || goto failed\n` +
        `goto start\n:cancel\necho inetboot: menu cancelled\nexit\n` +
        FAILED("the chosen entry")
      );
    }
    case "chain":
      return (
        head + `chain --autofree ${plan.url} || goto failed\n` + FAILED(`chaining ${plan.url}`)
      );
    case "sanboot":
      return (
        head +
        (plan.title
          ? `echo Booting ${line(plan.title)} from its own boot record (sanboot)\n`
          : "") +
        `sanboot ${plan.noDescribe ? "--no-describe " : ""}${plan.url} || goto failed\n` +
        FAILED(`sanboot ${plan.url}`)
      );
    case "local":
      return head + `echo inetboot: booting from the local disk\nexit\n`;
    case "shell":
      return head + `shell\n`;
    case "exit":
      return (
        head +
        (plan.message ? `echo inetboot: ${line(plan.message)}\n` : "") +
        `exit ${plan.code}\n`
      );
    case "error":
      return `${head}echo inetboot: ${line(plan.message)}\necho inetboot: dropping to the iPXE shell (type exit to go on)\nshell\n`;
    case "wait":
      return `${head}echo inetboot: ${line(plan.message)}; asking again in ${plan.seconds} s\nsleep ${plan.seconds}\nchain --replace --autofree ${plan.url.replaceAll("$", "%24")}\n`;
  }
}

/** A script that shows why a machine cannot boot and stops in the iPXE shell. */
export function errorScript(message: string): string {
  return renderIpxe({ kind: "error", message });
}
