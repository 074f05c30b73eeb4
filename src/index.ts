/**
 * The programmatic API: inspect, plan and patch single files. Every function returns a plain
 * record; a file that cannot be handled gives a `FileError` record, never an exception.
 */
import { closeSync, fstatSync, openSync, realpathSync } from "node:fs";
import { CoreEngine, fdSource } from "./core/engine.js";
import { ElfPatchError, ErrorCode, toErrorRecord } from "./errors.js";
import { processFile, resolveRequest, selfRelocatingSkip, type BatchSpec, type SelfRelocating } from "./batch/process-file.js";
import { LibraryProbe, type RpathPolicy } from "./policy/rpath.js";
import type { EditRequest, ElfInfo, FileError, PlanResult, Strategy } from "./core/types.js";

export type { EditRequest, ElfInfo, FileError, PlanResult, Edit, RunpathTag, Strategy } from "./core/types.js";
export { CoreEngine, bufferSource, fdSource, type ByteSource } from "./core/engine.js";
export { ErrorCode, type ErrorRecord } from "./errors.js";
export { LibraryProbe, type RpathPolicy } from "./policy/rpath.js";

/** The result of `patchFile` for a file that could be handled. */
export interface PatchResult {
  path: string;
  changed: boolean;
  before: ElfInfo;
  /** The file as written; null under `dryRun` (nothing was written). */
  after: ElfInfo | null;
  /** Number of byte ranges written. */
  edits: number;
  /** How the edits fit (`in-place` when nothing moved). */
  strategy: Strategy;
  /** Bytes the file grew by. */
  bytesAdded: number;
  /** Of those, bytes of sections moved out of the way of the program header table. */
  movedBytes: number;
  /**
   * Set when the file was left alone because it relocates itself (`static-pie`, `loader`: see
   * `selfRelocating` in batch/process-file.ts); `after` is then the file as it is.
   */
  skipped?: SelfRelocating;
}

/** Options of `planFile`/`patchFile`. */
export interface PatchOptions {
  /** A run-path policy (add, shrink, allowed prefixes...) resolved per file before planning. */
  rpath?: RpathPolicy;
  /** Cache of library candidates probed by `--shrink-rpath` (share it across files). */
  probe?: LibraryProbe;
  /** Plan and report without writing. */
  dryRun?: boolean;
  /** Allow growing the file when an edit does not fit in place (default true). */
  grow?: boolean;
}

let shared: CoreEngine | null = null;
function engine(): CoreEngine {
  return (shared ??= CoreEngine.create());
}

export function isFileError(r: unknown): r is FileError {
  return typeof r === "object" && r !== null && "error" in r;
}

function withFile<T>(path: string, fn: (fd: number) => T): T {
  const fd = openSync(path, "r");
  try {
    if (!fstatSync(fd).isFile()) throw new ElfPatchError(ErrorCode.IO_NOT_FILE, "Not a regular file");
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** Everything the core reads from one file. */
export function inspectFile(path: string, eng: CoreEngine = engine()): ElfInfo | FileError {
  try {
    return withFile(path, (fd) => eng.inspect(fdSource(fd), path));
  } catch (err) {
    return { path, error: toErrorRecord(err) };
  }
}

/** Plans `req` on one file without writing anything. */
export function planFile(
  path: string,
  req: EditRequest,
  opts: PatchOptions = {},
  eng: CoreEngine = engine(),
): PlanResult | FileError {
  try {
    const spec: BatchSpec = { req };
    if (opts.rpath) spec.rpath = opts.rpath;
    const resolve = resolveRequest(spec, path, opts.probe ?? new LibraryProbe());
    return withFile(path, (fd) => eng.plan(fdSource(fd), path, resolve, opts.grow !== false));
  } catch (err) {
    return { path, error: toErrorRecord(err) };
  }
}

/**
 * Applies `req` to one file. Nothing is written when nothing changes; otherwise the file is
 * replaced atomically (see `io/safe-write.ts`) after the new version parsed successfully.
 * A symlink is followed: its target is patched and the link kept.
 */
export function patchFile(
  path: string,
  req: EditRequest,
  opts: PatchOptions = {},
  eng: CoreEngine = engine(),
): PatchResult | FileError {
  let target: string;
  try {
    target = realpathSync(path);
  } catch (err) {
    return { path, error: toErrorRecord(err) };
  }
  const spec: BatchSpec = { req, grow: opts.grow !== false, dryRun: opts.dryRun === true };
  if (opts.rpath) spec.rpath = opts.rpath;
  const r = processFile(eng, target, spec, opts.probe ?? new LibraryProbe(), true);
  if (r.error || !r.beforeInfo) return { path, error: r.error ?? { code: ErrorCode.INTERNAL, message: "No result" } };
  const before = { ...r.beforeInfo, path };
  const self = selfRelocatingSkip(r) ?? undefined;
  const after = r.afterInfo ? { ...r.afterInfo, path } : self ? before : null;
  return {
    path, changed: r.changed, before, after, edits: r.edits, strategy: r.strategy ?? "in-place", bytesAdded: r.bytesAdded,
    movedBytes: r.movedBytes ?? 0, ...(self ? { skipped: self } : {}),
  };
}
