/**
 * `elfpatch check [--json] [--tree] [--exe PATH] [--ld-library-path LIST|env] [--root DIR] PATH...`:
 * where every DT_NEEDED of each ELF file under the PATHs resolves under the target loader's rules (glibc's, or musl's for a musl tree), statically.
 * Each file is loaded as `dlopen(path)` by the `--exe` program (default: a program with nothing
 * loaded). Exit status 1 when a library is missing, a version is missing or a candidate is invalid.
 */
import { Command } from "../commander.js";
import { resolve as resolvePath } from "node:path";
import { ElfPatchError } from "../../errors.js";
import type { Resolver } from "../../resolve/resolver.js";
import type { CheckSummary } from "../../resolve/summary.js";
import type { FileReport } from "../../resolve/types.js";
import { collect, noNul } from "../options.js";
import { SCHEMA_VERSION } from "../render.js";
import type { CliIo } from "../program.js";

interface CheckOptions {
  json?: boolean;
  tree?: boolean;
  exe?: string;
  ldLibraryPath?: string;
  root?: string;
  include?: string[];
  exclude?: string[];
  followSymlinks?: boolean;
}

/** The problem lines of one report (nothing for a file that resolves). */
function problems(r: FileReport): string[] {
  if (r.status === "not-loadable") return [];
  const out = r.needed.filter((e) => e.status === "missing").map((e) => `${r.path}: ${e.name} not found (needed by ${e.by})`);
  for (const e of r.errors) out.push(`${r.path}: ${e}`);
  return out;
}

function renderSummary(s: CheckSummary): string {
  const missing = s.missingLibraries.slice(0, 5).map((m) => `${m.name} (${m.count} files)`).join(", ");
  const loaders = s.loaders.map((l) => `${l.rules}${l.glibc ? ` ${l.glibc}` : ""} ${l.path}`).join(", ");
  return `elfpatch check: ${s.files} files: ${s.ok} ok, ${s.unresolved} unresolved, ${s.errors} with errors, ` +
    `${s.notLoadable} not loadable` + (missing ? `; missing ${missing}` : "") +
    (s.versionGaps.length ? `; ${s.versionGaps.length} missing versions` : "") +
    (loaders ? `; by ${loaders}` : "") + `; ${s.elapsedMs} ms`;
}

function libraryPath(value: string | undefined): string | null {
  if (value === undefined) return null;
  return value === "env" ? (process.env.LD_LIBRARY_PATH ?? null) : value;
}

async function createResolver(opts: CheckOptions, io: CliIo): Promise<Resolver | null> {
  const { Resolver } = await import("../../resolve/resolver.js");
  try {
    return new Resolver({
      mode: "dlopen",
      exe: opts.exe ?? null,
      ldLibraryPath: libraryPath(opts.ldLibraryPath),
      ...(opts.root !== undefined ? { root: resolvePath(opts.root) } : {}),
    });
  } catch (err) {
    if (!(err instanceof ElfPatchError)) throw err;
    io.err(`elfpatch: ${err.message}`);
    io.setExitCode(1);
    return null;
  }
}

function output(r: FileReport, opts: CheckOptions, io: CliIo, renderTree: (r: FileReport) => string[]): void {
  if (opts.json) io.out(JSON.stringify({ schema: SCHEMA_VERSION, ...r }));
  else if (opts.tree) for (const line of renderTree(r)) io.out(line);
  else for (const line of problems(r)) io.out(line);
}

export function checkCommand(io: CliIo): Command {
  return new Command("check")
    .description("report where each DT_NEEDED of every ELF file under the PATHs resolves, by the loader's rules (glibc's; musl's for a musl tree; nothing is run)")
    .argument("<paths...>", "files or directories")
    .option("--json", "NDJSON on stdout: one record per file, then a summary record")
    .option("--tree", "print each file's load tree with the reason for every library")
    .option("--exe <path>", "the program that loads each file with dlopen (its RPATH and libraries apply)", noNul)
    .option("--ld-library-path <list>", "LD_LIBRARY_PATH to assume ('env': this process's; default: none)", noNul)
    .option("--root <dir>", "resolve as if DIR were / (ld.so.cache, default directories, absolute paths, --exe)", noNul)
    .option("--include <glob>", "only files matching (repeatable)", collect)
    .option("--exclude <glob>", "skip files matching (repeatable)", collect)
    .option("--follow-symlinks", "follow symlinks that lead out of the PATHs")
    .action(async (paths: string[], opts: CheckOptions) => {
      const t0 = performance.now();
      const resolver = await createResolver(opts, io);
      if (!resolver) return;
      const [{ scan }, { summarize }, { renderTree }] = await Promise.all([
        import("../../scan/walk.js"), import("../../resolve/summary.js"), import("../../resolve/tree.js"),
      ]);
      const found = scan(paths, {
        followSymlinks: opts.followSymlinks === true,
        ...(opts.include ? { include: opts.include } : {}),
        ...(opts.exclude ? { exclude: opts.exclude } : {}),
      });
      for (const e of found.errors) io.err(`${e.path}: error ${e.error.code}: ${e.error.message}`);
      const reports: FileReport[] = [];
      for (const f of found.files) {
        const r = resolver.resolve(f.path);
        reports.push(r);
        output(r, opts, io, renderTree);
      }
      for (const e of resolver.contextErrors) io.err(`elfpatch: warning: the --exe program does not load: ${e}`);
      const summary = summarize(reports, resolver.runPathUses(), performance.now() - t0, resolver.exeReport, resolver.loaders());
      if (opts.json) io.out(JSON.stringify({ schema: SCHEMA_VERSION, ...summary }));
      io.err(renderSummary(summary));
      io.setExitCode(summary.unresolved + summary.errors + found.errors.length > 0 ? 1 : 0);
    });
}
