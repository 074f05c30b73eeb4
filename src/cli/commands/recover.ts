/** `elfpatch recover PATH...`: rolls back files an interrupted `--in-place` run left half-edited. */
import { Command } from "../commander.js";
import { statSync, unlinkSync } from "node:fs";
import { ownedByLiveProcess, UNDO_SUFFIX } from "../../batch/temp-names.js";
import { toErrorRecord } from "../../errors.js";
import type { CliIo } from "../program.js";

export function recoverCommand(io: CliIo): Command {
  return new Command("recover")
    .description(`roll back files from undo journals (*${UNDO_SUFFIX}) left by an interrupted --in-place run`)
    .argument("<paths...>", "journal files, or directories to search for them")
    .action(async (paths: string[]) => {
      const [{ recoverJournal }, { scan }] = await Promise.all([import("../../batch/journal.js"), import("../../scan/walk.js")]);
      const journals: string[] = [];
      for (const p of paths) {
        try {
          if (statSync(p).isDirectory()) {
            const found = scan([p]);
            journals.push(...found.journals);
            // Temp files of an interrupted run (a journal being written, a copy being made) are ours.
            for (const t of found.staleTemps) {
              if (ownedByLiveProcess(t)) continue; // a running process's copy in the making
              unlinkSync(t);
              io.out(`${t}: removed an interrupted run's temp file`);
            }
          } else journals.push(p);
        } catch (err) {
          io.err(`${p}: error ${toErrorRecord(err).code}`);
          io.setExitCode(1);
        }
      }
      for (const j of journals) {
        if (ownedByLiveProcess(j)) {
          // Rolling back a journal its run is still working under would undo that run's edits.
          io.err(`${j}: error IO_IN_USE: An undo journal of a running elfpatch process; not rolled back`);
          io.setExitCode(1);
          continue;
        }
        try {
          const r = recoverJournal(j);
          if (r.outcome === "discarded") io.out(`${j}: incomplete journal discarded (no file was touched)`);
          for (const f of r.files) io.out(`${f}: rolled back to the original`);
        } catch (err) {
          const e = toErrorRecord(err);
          io.err(`${j}: error ${e.code}: ${e.message}`);
          io.setExitCode(1);
        }
      }
      if (journals.length === 0) io.err("no undo journals found");
    });
}
