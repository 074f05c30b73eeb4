/** `elfpatch patch [ops] FILE...`: in-place-able edits on single files, written atomically. */
import { Command, InvalidArgumentError } from "commander";
import { isFileError, patchFile } from "../../index.js";
import { LibraryProbe } from "../../policy/rpath.js";
import { collect, collectPair, noNul, toPatchSpec, type PatchSpec, type RawPatchOptions } from "../options.js";
import { patchRecord, renderError, renderPatch } from "../render.js";
import type { CliIo } from "../program.js";

export function patchCommand(io: CliIo): Command {
  return new Command("patch")
    .description("edit RPATH/RUNPATH, NEEDED, SONAME and the interpreter; writes only files that change")
    .argument("<files...>", "ELF files")
    .option("--set-rpath <path>", "set the run path (DT_RUNPATH, or DT_RPATH with --force-rpath)", noNul)
    .option("--remove-rpath", "remove DT_RPATH and DT_RUNPATH")
    .option("--add-rpath <dirs>", "append directories (colon-separated) not already in the run path (repeatable)", collect)
    .option("--shrink-rpath", "keep $ORIGIN-relative entries and directories that provide a DT_NEEDED library")
    .option("--allowed-rpath-prefixes <prefixes>", "keep only run-path entries under these colon-separated prefixes", noNul)
    .option("--force-rpath", "write DT_RPATH instead of DT_RUNPATH (converting an existing DT_RUNPATH)")
    .option("--remove-needed <lib>", "remove a DT_NEEDED entry (repeatable)", collect)
    .option("--replace-needed <old=new>", "replace a DT_NEEDED entry (repeatable)", collectPair)
    .option("--add-needed <lib>", "add a DT_NEEDED entry before the others, if absent (repeatable)", collect)
    .option("--set-soname <soname>", "set DT_SONAME", noNul)
    .option("--set-interpreter <path>", "set the PT_INTERP program interpreter", noNul)
    .option("--no-default-lib", "set DF_1_NODEFLIB (ignore the default library directories)")
    .option("--dry-run", "plan and report, write nothing")
    .option("--no-grow", "fail (ELF_NO_ROOM) instead of growing a file when an edit does not fit in place")
    .option("--json", "one JSON object per file (NDJSON)")
    .action((files: string[], raw: RawPatchOptions & { defaultLib?: boolean; grow?: boolean }) => {
      // commander maps --no-default-lib to defaultLib=false and --no-grow to grow=false.
      const opts: RawPatchOptions = { ...raw, noDefaultLib: raw.defaultLib === false };
      let spec: PatchSpec;
      try {
        spec = toPatchSpec(opts);
      } catch (err) {
        if (err instanceof InvalidArgumentError) return io.usage(err.message);
        throw err;
      }
      const probe = new LibraryProbe();
      let failed = 0;
      for (const path of files) {
        const r = patchFile(path, spec.req, { dryRun: opts.dryRun === true, grow: raw.grow !== false, rpath: spec.rpath, probe });
        if (isFileError(r)) failed++;
        if (opts.json) io.out(JSON.stringify(patchRecord(r, opts.dryRun === true)));
        else if (isFileError(r)) io.err(renderError(r));
        else io.out(renderPatch(r, opts.dryRun === true));
      }
      io.setExitCode(failed ? 1 : 0);
    });
}
