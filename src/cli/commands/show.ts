/** `elfpatch show [--json] FILE...`: everything the core reads from each file. */
import { Command } from "../commander.js";
import { renderError, renderInfo, SCHEMA_VERSION } from "../render.js";
import type { CliIo } from "../program.js";

export function showCommand(io: CliIo): Command {
  return new Command("show")
    .description("print what elfpatch reads from each ELF file")
    .argument("<files...>", "ELF files")
    .option("--json", "one JSON object per file (NDJSON)")
    .action(async (files: string[], opts: { json?: boolean }) => {
      const { inspectFile, isFileError } = await import("../../index.js");
      let failed = 0;
      for (const path of files) {
        const r = inspectFile(path);
        if (isFileError(r)) failed++;
        if (opts.json) io.out(JSON.stringify({ schema: SCHEMA_VERSION, ...r }));
        else if (isFileError(r)) io.err(renderError(r));
        else io.out(renderInfo(r));
      }
      io.setExitCode(failed ? 1 : 0);
    });
}
