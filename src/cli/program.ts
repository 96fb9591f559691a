// The inetboot command line: the only place that reads argv, prints, and sets exit codes. This
// file wires the commands (each in its own *-command.ts) into one program; main.ts (and the
// single-executable entry) run it.
import { Command } from "commander";
import { registerAttachCommand } from "./attach-command.ts";
import { registerCacheCommands } from "./cache-command.ts";
import { registerDoctorCommand } from "./doctor-command.ts";
import { registerExtractCommand } from "./extract-command.ts";
import { registerImageCommands } from "./image-command.ts";
import { registerInitCommand } from "./init-command.ts";
import { registerIsoCommands } from "./iso-command.ts";
import { registerKeygenCommand } from "./keygen-command.ts";
import { registerMachinesCommands } from "./machines-command.ts";
import { registerOptimizeCommand } from "./optimize-command.ts";
import { ReportedFailure } from "./output.ts";
import { registerPackCommand } from "./pack-command.ts";
import { registerProfileCommands } from "./profile-command.ts";
import { registerRunCommand } from "./run-command.ts";
import { registerServeCommand } from "./serve-command.ts";
import { registerStoreCommands } from "./store-command.ts";

/** The whole command line; commands are registered in the order `inetboot --help` lists them. */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name("inetboot")
    .description("Network boot from lazily fetched, signed, content-addressed disk images")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (str, write) => write(str) });
  registerKeygenCommand(program);
  registerPackCommand(program);
  registerExtractCommand(program);
  registerStoreCommands(program); // verify, ls, diff, gc
  registerAttachCommand(program);
  registerCacheCommands(program);
  registerProfileCommands(program);
  registerOptimizeCommand(program);
  registerIsoCommands(program);
  registerImageCommands(program);
  registerRunCommand(program);
  registerInitCommand(program);
  registerServeCommand(program);
  registerDoctorCommand(program);
  registerMachinesCommands(program); // machines, next, reload
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
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
