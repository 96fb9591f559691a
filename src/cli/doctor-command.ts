// `inetboot doctor`: checks a running setup from the server's side and prints what to fix
// (the checks are src/serve/doctor/; this only prints them and sets the exit code).
import type { Command } from "commander";
import { runDoctor } from "../serve/doctor/index.ts";
import type { Check } from "../serve/doctor/index.ts";
import { printJson } from "./output.ts";

const MARK: Record<Check["outcome"], string> = { ok: "✓", warn: "!", fail: "✗" };

export function registerDoctorCommand(program: Command): void {
  program
    .command("doctor")
    .description("check a running boot server's setup from its side and print what to fix")
    .option("--config <file>", "YAML configuration, as inetboot serve takes it (default: built-in)")
    .option("--json", "print the checks as JSON")
    .action(async (opts: { config?: string; json?: boolean }) => {
      const checks = await runDoctor(opts.config ?? null);
      const failed = checks.some((c) => c.outcome === "fail");
      if (opts.json) printJson({ ok: !failed, checks });
      else {
        for (const c of checks) {
          console.log(`${MARK[c.outcome]} ${c.name}: ${c.detail}`);
          if (c.fix) console.log(`    fix: ${c.fix}`);
        }
        const count = (o: Check["outcome"]): number => checks.filter((c) => c.outcome === o).length;
        console.log(`\n${count("ok")} ok, ${count("warn")} warning(s), ${count("fail")} failed`);
      }
      if (failed) process.exitCode = 1;
    });
}
