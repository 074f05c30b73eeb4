/** Builds the commander program with injected I/O, so tests can run it without a process. */
import { Command } from "./commander.js";
import { checkCommand } from "./commands/check.js";
import { patchCommand } from "./commands/patch.js";
import { recoverCommand } from "./commands/recover.js";
import { showCommand } from "./commands/show.js";

export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  setExitCode(code: number): void;
  /** Reports a usage error (exit code 2). */
  usage(message: string): void;
}

export function packageVersion(): string {
  for (const rel of ["../../package.json", "../../../package.json"]) {
    try {
      return (require(rel) as { version: string }).version;
    } catch {
      // try the next layout (sources vs build/js)
    }
  }
  return "0.0.0";
}

export function createProgram(io: CliIo): Command {
  const output = { writeOut: (s: string) => io.out(s.trimEnd()), writeErr: (s: string) => io.err(s.trimEnd()) };
  const program = new Command("elfpatch")
    .description("Batch ELF patcher: run paths, NEEDED, SONAME and interpreter edits that never bloat files")
    .version(packageVersion())
    .configureOutput(output)
    .exitOverride();
  // addCommand() does not copy these settings to subcommands: set them on each.
  for (const cmd of [showCommand(io), patchCommand(io), checkCommand(io), recoverCommand(io)]) program.addCommand(cmd.configureOutput(output).exitOverride());
  return program;
}
