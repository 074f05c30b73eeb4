/** `elfpatch patch [ops] FILE...`: in-place-able edits on single files, written atomically. */
import { Command, InvalidArgumentError } from "commander";
import { isFileError, patchFile } from "../../index.js";
import { collect, collectPair, noNul, toEditRequest, type RawPatchOptions } from "../options.js";
import { patchRecord, renderError, renderPatch } from "../render.js";
import type { CliIo } from "../program.js";

export function patchCommand(io: CliIo): Command {
  return new Command("patch")
    .description("edit RPATH/RUNPATH, NEEDED, SONAME and the interpreter; writes only files that change")
    .argument("<files...>", "ELF files")
    .option("--set-rpath <path>", "set the run path (DT_RUNPATH, or DT_RPATH with --force-rpath)", noNul)
    .option("--remove-rpath", "remove DT_RPATH and DT_RUNPATH")
    .option("--force-rpath", "write DT_RPATH instead of DT_RUNPATH (converting an existing DT_RUNPATH)")
    .option("--remove-needed <lib>", "remove a DT_NEEDED entry (repeatable)", collect)
    .option("--replace-needed <old=new>", "replace a DT_NEEDED entry (repeatable)", collectPair)
    .option("--add-needed <lib>", "add a DT_NEEDED entry before the others, if absent (repeatable)", collect)
    .option("--set-soname <soname>", "set DT_SONAME", noNul)
    .option("--set-interpreter <path>", "set the PT_INTERP program interpreter", noNul)
    .option("--no-default-lib", "set DF_1_NODEFLIB (ignore the default library directories)")
    .option("--dry-run", "plan and report, write nothing")
    .option("--json", "one JSON object per file (NDJSON)")
    .action((files: string[], raw: RawPatchOptions & { defaultLib?: boolean }) => {
      // commander maps --no-default-lib to defaultLib=false.
      const opts: RawPatchOptions = { ...raw, noDefaultLib: raw.defaultLib === false };
      let req;
      try {
        req = toEditRequest(opts);
      } catch (err) {
        if (err instanceof InvalidArgumentError) return io.usage(err.message);
        throw err;
      }
      let failed = 0;
      for (const path of files) {
        const r = patchFile(path, req, { dryRun: opts.dryRun === true });
        if (isFileError(r)) failed++;
        if (opts.json) io.out(JSON.stringify(patchRecord(r, opts.dryRun === true)));
        else if (isFileError(r)) io.err(renderError(r));
        else io.out(renderPatch(r, opts.dryRun === true));
      }
      io.setExitCode(failed ? 1 : 0);
    });
}
