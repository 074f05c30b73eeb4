/** `elfpatch patch [ops] PATH...`: patches every ELF file under the PATHs, in one run. */
import { Command, InvalidArgumentError, Option } from "../commander.js";
import { readFileSync, realpathSync } from "node:fs";
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import type { ResultCache } from "../../batch/cache.js";
import type { BatchSpec, FileRecord } from "../../batch/process-file.js";
import type { ResolutionSummary } from "../../batch/resolution.js";
import { collect, collectPair, noNul, positiveInt, toPatchSpec, type PatchSpec, type RawPatchOptions } from "../options.js";
import { createProgress } from "../progress.js";
import { renderRecord, renderSummary, SCHEMA_VERSION } from "../render.js";
import { packageVersion, type CliIo } from "../program.js";

interface BatchCliOptions {
  jobs?: number;
  include?: string[];
  exclude?: string[];
  followSymlinks?: boolean;
  check?: boolean;
  inPlace?: boolean;
  hardlinks?: "break" | "preserve";
  progress?: boolean;
  grow?: boolean;
  resolve?: boolean;
  defaultLib?: boolean;
  cache?: boolean;
  cacheDir?: string;
}

/** The result cache for these options and PATHs (see batch/cache.ts). */
async function openCache(batch: BatchSpec, paths: string[], dir: string | undefined): Promise<ResultCache> {
  const [{ cacheKey, defaultCacheDir, ResultCache }, { wasmPath }] = await Promise.all([
    import("../../batch/cache.js"), import("../../core/module.js"),
  ]);
  // The working directory too: relative run-path entries are looked up from it.
  const key = cacheKey({ req: batch.req, rpath: batch.rpath ?? null, grow: batch.grow, cwd: process.cwd() }, packageVersion(), readFileSync(wasmPath()));
  const roots = paths.map((p) => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  });
  return ResultCache.open(dir ?? defaultCacheDir(), key, roots);
}

export function patchCommand(io: CliIo): Command {
  return new Command("patch")
    .description("patch every ELF file under the PATHs (files or directory trees); writes only files that change")
    .argument("<paths...>", "files or directories")
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
    .option("--no-grow", "fail (ELF_NO_ROOM) instead of growing a file when an edit does not fit in place")
    .option("--dry-run", "plan and report, write nothing")
    .option("--check", "write nothing; exit 1 if any file would change")
    .option("--in-place", "edit each file's own inode under an undo journal (fast; no copy)")
    .addOption(new Option("--hardlinks <mode>", "a hard-linked file: break the link (default) or edit the shared inode").choices(["break", "preserve"]).default("break"))
    .option("-j, --jobs <n>", "worker threads (default: available parallelism)", positiveInt)
    .option("--include <glob>", "only files matching (repeatable; relative to the PATH, or base name)", collect)
    .option("--exclude <glob>", "skip files matching (repeatable)", collect)
    .option("--follow-symlinks", "follow symlinks that lead out of the PATHs")
    .option("--no-progress", "no progress line on stderr")
    .option("--json", "NDJSON on stdout: one record per file (with its after-patch resolution), then a summary record")
    .option("--no-resolve", "with --json: leave out the after-patch resolution of each file")
    .option("--cache-dir <dir>", "where the result cache lives (default: $ELFPATCH_CACHE_DIR, $XDG_CACHE_HOME/elfpatch or ~/.cache/elfpatch)")
    .option("--no-cache", "neither use nor write the result cache (every file is opened and checked)")
    .action(async (paths: string[], raw: RawPatchOptions & BatchCliOptions) => {
      let spec: PatchSpec;
      try {
        spec = toPatchSpec({ ...raw, noDefaultLib: raw.defaultLib === false });
      } catch (err) {
        if (err instanceof InvalidArgumentError) return io.usage(err.message);
        throw err;
      }
      const dryRun = raw.dryRun === true || raw.check === true;
      const batch: BatchSpec = {
        req: spec.req, rpath: spec.rpath, grow: raw.grow !== false, dryRun,
        write: raw.inPlace ? "in-place" : "rename", hardlinks: raw.hardlinks ?? "break",
        // The human output names each changed file and its strategy only.
        details: raw.json === true,
      };
      const progress = await createProgress(raw.progress !== false && !raw.json);
      const scanOpts = {
        followSymlinks: raw.followSymlinks === true, ...(raw.include ? { include: raw.include } : {}), ...(raw.exclude ? { exclude: raw.exclude } : {}),
        // Without --json no unchanged record is printed: those answered from the cache need no details.
        lightCached: !raw.json,
      };
      // Loaded while the cache is read (module loading is part of a cached re-run's few dozen ms).
      const batchModule = import("../../batch/run.js");
      const cache = raw.cache === false ? undefined : await openCache(batch, paths, raw.cacheDir);
      const { runBatch } = await batchModule;
      const { records, summary } = await runBatch(paths, batch, {
        ...(cache ? { cache } : {}),
        jobs: raw.jobs ?? availableParallelism(),
        patientCompiler: true,
        scan: scanOpts,
        onStart: (files, bytes) => progress.start(files, bytes),
        onFile: (bytes) => progress.file(bytes),
      });
      progress.stop();
      // The after-patch resolution is computed record by record as it is written, so the whole
      // batch's load trees are never held at once.
      let resolutionOf: ((r: FileRecord) => ResolutionSummary | undefined) | null = null;
      if (raw.json && raw.resolve !== false && !dryRun) {
        const [{ resolutionOf: of }, { Resolver }] = await Promise.all([import("../../batch/resolution.js"), import("../../resolve/resolver.js")]);
        const resolver = new Resolver();
        resolutionOf = (r) => of(r, resolver);
      }
      for (const r of records) {
        if (raw.json) {
          const resolution = resolutionOf?.(r);
          io.out(JSON.stringify({ schema: SCHEMA_VERSION, ...r, ...(resolution ? { resolution } : {}) }));
        } else if (r.status === "failed") io.err(renderRecord(r));
        else if (r.status !== "unchanged") io.out(renderRecord(r));
      }
      if (raw.json) io.out(JSON.stringify({ schema: SCHEMA_VERSION, ...summary }));
      io.err(renderSummary(summary));
      const wouldChange = raw.check === true && summary.wouldPatch > 0;
      io.setExitCode(summary.failed > 0 || wouldChange ? 1 : 0);
    });
}
