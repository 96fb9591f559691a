// The inetboot command line: the only place that reads argv, prints, and sets exit codes. This
// file wires the commands (each in its own *-command.ts) into one program; main.ts (and the
// single-executable entry) run it.
import { Command } from "commander";
import { ReportedFailure } from "./output.ts";

type Register = (program: Command) => void;

/**
 * Every command group, in the order `inetboot --help` lists them: the names it adds at the top
 * level, and its module, loaded only when needed. A command loads its own code and no other's
 * (`pack` does not pay for the server's modules in memory or start-up time).
 */
const COMMANDS: { names: string[]; load: () => Promise<Register> }[] = [
  {
    names: ["keygen"],
    load: async () => (await import("./keygen-command.ts")).registerKeygenCommand,
  },
  { names: ["pack"], load: async () => (await import("./pack-command.ts")).registerPackCommand },
  {
    names: ["extract"],
    load: async () => (await import("./extract-command.ts")).registerExtractCommand,
  },
  {
    names: ["verify", "ls", "diff", "gc"],
    load: async () => (await import("./store-command.ts")).registerStoreCommands,
  },
  {
    names: ["attach"],
    load: async () => (await import("./attach-command.ts")).registerAttachCommand,
  },
  {
    names: ["cache"],
    load: async () => (await import("./cache-command.ts")).registerCacheCommands,
  },
  {
    names: ["profile"],
    load: async () => (await import("./profile-command.ts")).registerProfileCommands,
  },
  {
    names: ["optimize"],
    load: async () => (await import("./optimize-command.ts")).registerOptimizeCommand,
  },
  { names: ["iso"], load: async () => (await import("./iso-command.ts")).registerIsoCommands },
  {
    names: ["image"],
    load: async () => (await import("./image-command.ts")).registerImageCommands,
  },
  { names: ["run"], load: async () => (await import("./run-command.ts")).registerRunCommand },
  { names: ["init"], load: async () => (await import("./init-command.ts")).registerInitCommand },
  { names: ["serve"], load: async () => (await import("./serve-command.ts")).registerServeCommand },
  {
    names: ["doctor"],
    load: async () => (await import("./doctor-command.ts")).registerDoctorCommand,
  },
  {
    names: ["machines", "next", "reload"],
    load: async () => (await import("./machines-command.ts")).registerMachinesCommands,
  },
];

/**
 * The command line. With `command` (the first argument), only the group that defines it is
 * loaded; otherwise (help, an unknown word) every group is, so help and errors list them all.
 */
export async function buildProgram(command?: string): Promise<Command> {
  const program = new Command();
  program
    .name("inetboot")
    .description("Network boot from lazily fetched, signed, content-addressed disk images")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (str, write) => write(str) });
  const own = COMMANDS.find((c) => command !== undefined && c.names.includes(command));
  const groups = own ? [own] : COMMANDS;
  for (const register of await Promise.all(groups.map((c) => c.load()))) register(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = await buildProgram(argv[2]);
  program.exitOverride();
  try {
    if (argv.length <= 2) {
      program.outputHelp();
      return 0;
    }
    await program.parseAsync(argv);
    // A command may set process.exitCode after printing its report (a failed check).
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof ReportedFailure) return 1;
    const e = err as Error & { code?: string; exitCode?: number };
    if (typeof e.code === "string" && e.code.startsWith("commander.")) {
      return e.exitCode ?? 1;
    }
    console.error(`inetboot: ${e.message}`);
    if (process.env.INETBOOT_DEBUG) console.error(e.stack);
    return 1;
  }
}
