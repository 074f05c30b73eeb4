/**
 * Patches one file: plan with the core, then write the edits (atomic rename by default, or in
 * place under an undo journal), re-parsing the result before it replaces the original. Used by the
 * pool's workers and by the single-file API alike. Returns a plain record, never throws.
 */
import { closeSync, fstatSync, openSync } from "node:fs";
import { dirname } from "node:path";
import { CoreEngine, fdSource, type PlannedEdits } from "../core/engine.js";
import type { EditRequest, ElfInfo, Strategy } from "../core/types.js";
import { ElfPatchError, ErrorCode, toErrorRecord, type ErrorRecord } from "../errors.js";
import { commitCopy, discardCopy, fsyncPath, prepareCopy, relinkAtomically, syncDir, syncFileSystems } from "../io/safe-write.js";
import { computeRunpath, hasRpathPolicy, LibraryProbe, runpathRequest, type RpathPolicy } from "../policy/rpath.js";
import { writeEditsInPlace, type UndoJournal } from "./journal.js";

export interface BatchSpec {
  req: EditRequest;
  rpath?: RpathPolicy;
  /** Grow files when an edit does not fit in place (default true). */
  grow?: boolean;
  /** Plan only: report what would change. */
  dryRun?: boolean;
  /** `rename` (default): new file renamed over the old; `in-place`: same inode, undo journal. */
  write?: "rename" | "in-place";
  /** `break` (default): a hard-linked file is replaced at this path only; `preserve`: edit the shared inode. */
  hardlinks?: "break" | "preserve";
}

/** The parts of ElfInfo a patch record shows before and after. */
export interface DynamicSummary {
  interpreter: string | null;
  soname: string | null;
  needed: string[];
  rpath: string | null;
  runpath: string | null;
  flags1: string[];
}

export type FileStatus = "patched" | "would-patch" | "unchanged" | "skipped" | "failed";

export interface FileRecord {
  type: "file";
  path: string;
  status: FileStatus;
  changed: boolean;
  /** How the edits fit; null when nothing changes. */
  strategy: Strategy | null;
  bytesAdded: number;
  /** Of those, bytes of sections moved out of the way of the program header table. */
  movedBytes?: number;
  /** Byte ranges written. */
  edits: number;
  /** How the file was written: a renamed copy, or its own inode (in place). */
  write?: "rename" | "in-place";
  /** Hard links the file had. */
  links?: number;
  size?: number;
  before?: DynamicSummary;
  after?: DynamicSummary;
  error?: ErrorRecord;
  /** After-patch resolution (`patch --json`; see batch/resolution.ts). */
  resolution?: import("./resolution.js").ResolutionSummary;
  /** Internal: the undo journal to commit at the end of the batch (never in the output). */
  journal?: string;
  /** Hard links inside the batch that were pointed at the new version. */
  relinked?: string[];
  /** Why a file was skipped (`duplicate`, `symlink-outside`, `excluded`). */
  skipReason?: string;
  /** For a duplicate (hard link or symlink inside the batch): the path handled instead. */
  duplicateOf?: string;
  /** Full parse results (single-file API only). */
  beforeInfo?: ElfInfo;
  afterInfo?: ElfInfo;
}

export function summarize(i: ElfInfo): DynamicSummary {
  return { interpreter: i.interpreter, soname: i.soname, needed: i.needed, rpath: i.rpath, runpath: i.runpath, flags1: i.flags1 };
}

function withoutInterpreter(req: EditRequest): EditRequest {
  const { interpreter: _i, ...rest } = req;
  return rest;
}

/** The request for one file: the run-path policy resolved against what the file has now. */
export function resolveRequest(spec: BatchSpec, path: string, probe: LibraryProbe, key?: string): (before: ElfInfo) => EditRequest {
  return (before) => {
    // A tree holds libraries and executables: the interpreter is set where there is one.
    const req = before.interpreter === null && spec.req.interpreter !== undefined ? withoutInterpreter(spec.req) : spec.req;
    const policy = spec.rpath;
    if (!policy || !hasRpathPolicy(policy)) return req;
    const entries = computeRunpath(before, path, policy, probe, key);
    const { setRpath: _s, removeRpath: _r, rpathTag: _t, ...rest } = req;
    return { ...rest, ...runpathRequest(before, entries, policy) };
  };
}

/** A planned file: its record so far, and the edits still to write (null when nothing to write). */
export interface PlannedFile {
  rec: FileRecord;
  plan: PlannedEdits | null;
  links: string[];
  /** The file's change time when it was planned (edits are applied only to those bytes). */
  ctimeMs?: number;
}

/** Plans one file; writes nothing. */
export function planOne(
  engine: CoreEngine,
  path: string,
  spec: BatchSpec,
  probe: LibraryProbe,
  keepInfo = false,
  links: string[] = [],
): PlannedFile {
  const rec: FileRecord = { type: "file", path, status: "failed", changed: false, strategy: null, bytesAdded: 0, edits: 0 };
  let ctimeMs: number | undefined;
  try {
    const fd = openSync(path, "r");
    let plan: PlannedEdits;
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new ElfPatchError(ErrorCode.IO_NOT_FILE, "Not a regular file");
      rec.links = st.nlink;
      ctimeMs = st.ctimeMs;
      // Version names only where something reads them: the full records, and --remove-needed
      // (a library's Verneed entry goes with it).
      const versions = keepInfo || (spec.req.removeNeeded?.length ?? 0) > 0;
      plan = engine.plan(fdSource(fd, st.size), path, resolveRequest(spec, path, probe, `${st.dev}:${st.ino}`), spec.grow !== false, versions);
    } finally {
      closeSync(fd);
    }
    rec.size = plan.before.size;
    rec.before = summarize(plan.before);
    if (keepInfo) rec.beforeInfo = plan.before;
    rec.edits = plan.edits.length;
    if (plan.edits.length === 0) {
      rec.status = "unchanged";
      rec.after = rec.before;
      if (keepInfo) rec.afterInfo = plan.before;
      return { rec, plan: null, links };
    }
    rec.changed = true;
    if (plan.after) {
      rec.after = summarize(plan.after);
      if (keepInfo) rec.afterInfo = plan.after;
    }
    rec.strategy = plan.strategy;
    rec.bytesAdded = plan.newSize - plan.before.size;
    if (plan.movedBytes) rec.movedBytes = plan.movedBytes;
    if (spec.dryRun) {
      rec.status = "would-patch";
      return { rec, plan: null, links };
    }
    return { rec, plan, links, ...(ctimeMs !== undefined ? { ctimeMs } : {}) };
  } catch (err) {
    rec.error = toErrorRecord(err);
    if (rec.error.code === ErrorCode.ELF_BAD_MAGIC) {
      // Not an ELF file (the scan left telling them apart to this open): the batch drops it.
      rec.status = "skipped";
      rec.skipReason = "not-elf";
      delete rec.error;
      return { rec, plan: null, links };
    }
    if (rec.error.code === ErrorCode.ELF_NO_DYNAMIC) {
      // A static executable or an object file: nothing a dynamic edit applies to.
      rec.status = "skipped";
      rec.skipReason = "no-dynamic";
    }
    return { rec, plan: null, links };
  }
}

/**
 * How a written file is checked: not at all when the core parsed the planned file before anything
 * was written (the record then has its `after` already); otherwise by parsing what was written.
 */
function verifier(engine: CoreEngine, p: PlannedFile, keepInfo: boolean): ((fd: number, size?: number) => void) | undefined {
  if (p.plan?.after) return undefined;
  return (fd, size) => {
    const after = engine.inspect(fdSource(fd, size), p.rec.path);
    p.rec.after = summarize(after);
    if (keepInfo) p.rec.afterInfo = after;
  };
}

const withVerify = (verify: ((fd: number, size?: number) => void) | undefined): { verify?: (fd: number, size?: number) => void } =>
  verify ? { verify } : {};

/**
 * Whether the file's own inode is edited: with --in-place, unless other links to it lie outside
 * the batch and the hard-link mode is `break` (a uv cache must keep its bytes); and with
 * `--hardlinks preserve` for hard-linked files.
 */
function writesInPlace(spec: BatchSpec, p: PlannedFile): boolean {
  const nlink = p.rec.links ?? 1;
  const allLinksInBatch = nlink <= 1 + p.links.length;
  if (spec.hardlinks === "preserve" && nlink > 1) return true;
  return spec.write === "in-place" && allLinksInBatch;
}

/**
 * From this many files on, the copies of a group are made durable by one `syncfs` rather than an
 * fsync each (every fsync is an ext4 journal commit: about 0.7 ms per file on the bench machine,
 * against a few ms for one `sync -f` process).
 */
const GROUP_SYNC_MIN = 8;

/**
 * Writes planned files as new copies renamed over the originals, in three steps: every copy is
 * made and verified, all of them are made durable (one `syncfs`, or an fsync each for a small
 * group or where `sync -f` is unavailable), then each is renamed over its original unless that
 * changed meanwhile. A crash at any point leaves every path at either its old or its new version
 * (plus temp files the next run removes). In-batch hard links are pointed at the new version.
 * When the disk fills up with the group's copies, those made so far are put in place first and
 * the copy is tried again, so a nearly full disk costs syncs, not failures.
 */
function writeRenamedGroup(engine: CoreEngine, group: PlannedFile[], keepInfo: boolean, dirs: Set<string>): void {
  const fsyncEach = group.length < GROUP_SYNC_MIN;
  const plannedOf = (p: PlannedFile) => ({ size: p.plan!.before.size, ...(p.ctimeMs !== undefined ? { ctimeMs: p.ctimeMs } : {}) });
  const fail = (p: PlannedFile, err: unknown) => {
    p.rec.status = "failed";
    p.rec.error = toErrorRecord(err);
  };
  const copies: { p: PlannedFile; tmp: string }[] = [];
  const prepare = (p: PlannedFile): string =>
    prepareCopy(p.rec.path, p.plan!.edits, p.plan!.newSize, verifier(engine, p, keepInfo), plannedOf(p), fsyncEach);
  /** Makes the copies so far durable and renames them over their originals. */
  const commitAll = (): void => {
    if (!fsyncEach && copies.length && !syncFileSystems(copies.map((c) => dirname(c.tmp)))) {
      for (let i = 0; i < copies.length; i++) {
        const c = copies[i]!;
        try {
          fsyncPath(c.tmp);
        } catch (err) {
          discardCopy(c.tmp);
          fail(c.p, err);
          copies.splice(i--, 1);
        }
      }
    }
    while (copies.length) {
      const { p, tmp } = copies.shift()!;
      const rec = p.rec;
      try {
        commitCopy(tmp, rec.path, plannedOf(p), dirs);
      } catch (err) {
        discardCopy(tmp);
        fail(p, err);
        continue;
      }
      rec.write = "rename";
      rec.status = "patched";
      // Other links to the old inode inside the batch get the new version too (links outside,
      // such as uv's cache, keep the old bytes).
      try {
        for (const other of p.links) relinkAtomically(rec.path, other);
        if (p.links.length) rec.relinked = p.links;
      } catch (err) {
        rec.error = toErrorRecord(err);
      }
    }
  };
  try {
    for (const p of group) {
      try {
        copies.push({ p, tmp: prepare(p) });
      } catch (err) {
        if (!noSpace(err) || copies.length === 0) {
          fail(p, err);
          continue;
        }
        // The disk is full of this group's copies: put them in place first (which frees their
        // originals), then try once more, as one copy at a time would have.
        commitAll();
        try {
          copies.push({ p, tmp: prepare(p) });
        } catch (again) {
          fail(p, again);
        }
      }
    }
    commitAll();
  } finally {
    // Only after an unexpected throw: no temp file outlives the group.
    for (const c of copies) discardCopy(c.tmp);
  }
}

const noSpace = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
};

/**
 * Writes the planned files; those edited in place share one undo journal. With `defer`, the
 * in-place files are made durable later by `commitJournals` (their records carry the journal), and
 * the directory entries of renamed copies by `commitRenames`.
 */
export function writePlanned(
  engine: CoreEngine,
  planned: PlannedFile[],
  spec: BatchSpec,
  keepInfo = false,
  defer = false,
  journal?: UndoJournal,
): void {
  const inPlace = planned.filter((p) => p.plan && writesInPlace(spec, p));
  const dirs = new Set<string>();
  writeRenamedGroup(engine, planned.filter((p) => p.plan && !writesInPlace(spec, p)), keepInfo, dirs);
  // Deferred: the batch makes the renames durable once at its end (`commitRenames`).
  if (!defer) for (const d of dirs) syncDir(d);
  const { errors, journal: pending } = writeEditsInPlace(
    inPlace.map((p) => ({
      path: p.rec.path, edits: p.plan!.edits, newSize: p.plan!.newSize, size: p.plan!.before.size, ...(p.ctimeMs !== undefined ? { ctimeMs: p.ctimeMs } : {}),
      undo: p.plan!.undo,
      ...withVerify(verifier(engine, p, keepInfo)),
    })),
    defer,
    undefined,
    journal,
  );
  inPlace.forEach((p, i) => {
    const err = errors[i];
    if (err) {
      p.rec.status = "failed";
      p.rec.error = err;
    } else {
      p.rec.status = "patched";
      p.rec.write = "in-place";
      if (pending) p.rec.journal = pending;
    }
  });
}

/** Plans and writes one file (the single-file API). */
export function processFile(
  engine: CoreEngine,
  path: string,
  spec: BatchSpec,
  probe: LibraryProbe,
  keepInfo = false,
  links: string[] = [],
): FileRecord {
  const p = planOne(engine, path, spec, probe, keepInfo, links);
  writePlanned(engine, [p], spec, keepInfo);
  return p.rec;
}

/**
 * Plans every file of a shard, then writes them (the in-place ones under one undo record of
 * `journal`, the thread's journal for the batch; of a journal of their own without).
 */
export function processShard(
  engine: CoreEngine,
  files: { path: string; links?: string[] | undefined }[],
  spec: BatchSpec,
  probe: LibraryProbe,
  onFile: (i: number) => void,
  journal?: UndoJournal,
): FileRecord[] {
  const planned = files.map((f, i) => {
    const p = planOne(engine, f.path, spec, probe, false, f.links ?? []);
    if (!p.plan) onFile(i);
    return p;
  });
  writePlanned(engine, planned, spec, false, true, journal);
  planned.forEach((p, i) => p.plan && onFile(i));
  return planned.map((p) => p.rec);
}

/**
 * Makes the renames of a batch durable: one `syncfs` per file system, or an fsync of each
 * directory. `records` are the batch's; a shard whose worker crashed may have renamed files too.
 */
export function commitRenames(records: FileRecord[]): void {
  const dirs = new Set<string>();
  for (const r of records) {
    if ((r.write === "rename" && r.status === "patched") || r.error?.code === ErrorCode.POOL_WORKER_CRASHED) dirs.add(dirname(r.path));
  }
  if (dirs.size && !syncFileSystems(dirs)) for (const d of dirs) syncDir(d);
}
