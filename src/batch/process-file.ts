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
import {
  commitCopy, commitCopyAsync, discardCopy, fsyncPath, prepareCopy, prepareCopyAsync, relinkAtomically, syncDir, syncFileSystems,
  type PlannedState,
} from "../io/safe-write.js";
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
  /**
   * Whether the records of changed files keep their `before` and `after` summaries (default
   * true). Without them a record is a few small fields: the CLI's human output (which shows none)
   * turns them off, so that a batch's memory grows less with its number of files.
   */
  details?: boolean;
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

/**
 * Why a file that relocates itself is skipped, or null for any other file. Such a file is run by
 * the kernel without a loader and finds its own dynamic array through `_DYNAMIC`, so no dynamic
 * edit has an effect and a moved table breaks it:
 * - `static-pie` (`gcc -static-pie`, Debian's `ldconfig`): `ET_DYN` with `DF_1_PIE`, no
 *   interpreter. With a run path glibc's static startup crashes (measured with glibc 2.36: a
 *   static PIE linked with `-rpath` segfaults before `main`, as does `ldconfig` after patchelf).
 * - `loader`: glibc's dynamic loader (`ld-linux-x86-64.so.2`, `ld-linux.so.2`,
 *   `ld-linux-aarch64.so.1`, `ld64.so.1`, `ld.so.1`... on every architecture): `ET_DYN` with an
 *   entry point, no interpreter, no `DT_NEEDED`, and such a SONAME (an entry point and no
 *   `DT_NEEDED` alone would also take mold's libraries without dependencies). It refuses a run
 *   path of its own (an assertion in `elf_get_dynamic_info`) and crashes when its string table
 *   moves. (musl's loader, its `libc.so`, has no SONAME to know it by, and needs no skip: patched
 *   with a run path it still runs programs, musl-oracle.test.ts.)
 */
export function selfRelocating(i: ElfInfo): SelfRelocating | null {
  if (i.type !== "DYN" || i.interpreter !== null) return null;
  if (i.flags1.includes("PIE")) return "static-pie";
  const loader = i.entry !== 0 && i.needed.length === 0 && i.soname !== null && GLIBC_LOADER_SONAME.test(i.soname);
  return loader ? "loader" : null;
}

export type SelfRelocating = "static-pie" | "loader";

/** Whether a record is a file left alone because it relocates itself. */
export function selfRelocatingSkip(rec: FileRecord): SelfRelocating | null {
  return rec.status === "skipped" && (rec.skipReason === "static-pie" || rec.skipReason === "loader") ? rec.skipReason : null;
}

/** The SONAMEs of glibc's loaders: `ld-linux*.so.N`, `ld64.so.N`, `ld.so.N`. */
const GLIBC_LOADER_SONAME = /^ld(?:-linux[\w.-]*|64)?\.so\.\d+$/;

function withoutInterpreter(req: EditRequest): EditRequest {
  const { interpreter: _i, ...rest } = req;
  return rest;
}

/** The request for one file: the run-path policy resolved against what the file has now. */
export function resolveRequest(spec: BatchSpec, path: string, probe: LibraryProbe, key?: string): (before: ElfInfo) => EditRequest {
  return (before) => {
    if (selfRelocating(before) !== null) return {};
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

/**
 * What the scan's `lstat` saw of a file. A file that needs no edit is checked without an `fstat`
 * of its own (on the bench tree's re-run, 3,165 of them took 20-37 ms of the main thread); a file
 * that gets edits is `fstat`ed before anything is written, and planned again if it changed since.
 */
export interface ScannedStat {
  size: number;
  dev: number;
  ino: number;
  nlink: number;
  ctimeMs: number;
}

/** The `fstat` of an open file, as a ScannedStat; a file that is not regular is refused. */
function statOpen(fd: number): ScannedStat {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new ElfPatchError(ErrorCode.IO_NOT_FILE, "Not a regular file");
  return { size: st.size, dev: st.dev, ino: st.ino, nlink: st.nlink, ctimeMs: st.ctimeMs };
}

const sameStat = (a: ScannedStat, b: ScannedStat): boolean =>
  a.size === b.size && a.dev === b.dev && a.ino === b.ino && a.ctimeMs === b.ctimeMs;

/**
 * Plans one file; writes nothing. `scanned`: what the scan saw of it, trusted as long as the plan
 * changes nothing; a plan with edits (or a failure) is made again from an `fstat` when the file
 * changed since the scan, so that edits are only ever applied to the bytes they were planned on.
 */
export function planOne(
  engine: CoreEngine,
  path: string,
  spec: BatchSpec,
  probe: LibraryProbe,
  keepInfo = false,
  links: string[] = [],
  scanned?: ScannedStat,
): PlannedFile {
  const rec: FileRecord = { type: "file", path, status: "failed", changed: false, strategy: null, bytesAdded: 0, edits: 0 };
  let ctimeMs: number | undefined;
  try {
    const fd = openSync(path, "r");
    let plan: PlannedEdits;
    try {
      // Version names only where something reads them: the full records, and --remove-needed
      // (a library's Verneed entry goes with it).
      const versions = keepInfo || (spec.req.removeNeeded?.length ?? 0) > 0;
      const planAs = (st: ScannedStat): PlannedEdits =>
        engine.plan(fdSource(fd, st.size), path, resolveRequest(spec, path, probe, `${st.dev}:${st.ino}`), spec.grow !== false, versions);
      let st = scanned ?? statOpen(fd);
      try {
        plan = planAs(st);
      } catch (err) {
        if (scanned === undefined) throw err;
        // Perhaps the file changed after the scan (truncated, replaced): planned again as it is now.
        const now = statOpen(fd);
        if (sameStat(now, scanned)) throw err;
        st = now;
        plan = planAs(st);
      }
      if (st === scanned && plan.edits.length > 0) {
        // Edits are checked at write time against a change time taken before their bytes were
        // read: the scan's, if the file is still as the scan saw it; else it is planned again
        // from now on (this fstat precedes that plan's reads).
        const now = statOpen(fd);
        if (!sameStat(now, scanned)) plan = planAs(now);
        st = now;
      }
      rec.links = st.nlink;
      ctimeMs = st.ctimeMs;
    } finally {
      closeSync(fd);
    }
    rec.size = plan.before.size;
    rec.before = summarize(plan.before);
    if (keepInfo) rec.beforeInfo = plan.before;
    rec.edits = plan.edits.length;
    const self = selfRelocating(plan.before);
    if (self !== null) {
      rec.status = "skipped";
      rec.skipReason = self;
      return { rec, plan: null, links };
    }
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

/** A planned file's new version, made in a temp file next to it and not yet renamed over it. */
interface Copy {
  p: PlannedFile;
  tmp: string;
}

const plannedOf = (p: PlannedFile): PlannedState => ({ size: p.plan!.before.size, ...(p.ctimeMs !== undefined ? { ctimeMs: p.ctimeMs } : {}) });

function fail(p: PlannedFile, err: unknown): void {
  p.rec.status = "failed";
  p.rec.error = toErrorRecord(err);
}

/**
 * Makes a copy of every file of the group (the original's bytes and mode, the edits), not yet
 * durable. When the disk fills up, `full(copies)` must put the copies made so far in place (which
 * frees their originals) and empty the list; the copy is then tried once more, as one copy at a
 * time would have. On an unexpected throw no temp file is left.
 */
function makeCopies(engine: CoreEngine, group: PlannedFile[], keepInfo: boolean, full: (copies: Copy[]) => void): Copy[] {
  const copies: Copy[] = [];
  const prepare = (p: PlannedFile): string =>
    prepareCopy(p.rec.path, p.plan!.edits, p.plan!.newSize, verifier(engine, p, keepInfo), plannedOf(p), false);
  try {
    for (const p of group) {
      try {
        copies.push({ p, tmp: prepare(p) });
      } catch (err) {
        if (!noSpace(err)) {
          fail(p, err);
          continue;
        }
        full(copies);
        try {
          copies.push({ p, tmp: prepare(p) });
        } catch (again) {
          fail(p, again);
        }
      }
    }
  } catch (err) {
    for (const c of copies) discardCopy(c.tmp);
    throw err;
  }
  return copies;
}

/** Most kernel copies or renames one thread keeps going at once (libuv's pool has 4 threads). */
const IO_AHEAD = 4;

/** Runs `fn` on every item, at most `limit` at once. */
async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
}

/**
 * makeCopies with the kernel copies made on libuv's thread pool, IO_AHEAD at a time. Copies that
 * found the disk full are made again one by one after `full` (see makeCopies).
 */
async function makeCopiesAsync(engine: CoreEngine, group: PlannedFile[], full: (copies: Copy[]) => void): Promise<Copy[]> {
  const copies: Copy[] = [];
  const again: PlannedFile[] = [];
  try {
    await eachLimit(group, IO_AHEAD, async (p) => {
      try {
        copies.push({ p, tmp: await prepareCopyAsync(p.rec.path, p.plan!.edits, p.plan!.newSize, verifier(engine, p, false), plannedOf(p)) });
      } catch (err) {
        if (noSpace(err)) again.push(p);
        else fail(p, err);
      }
    });
  } catch (err) {
    for (const c of copies) discardCopy(c.tmp);
    throw err;
  }
  if (again.length) {
    // The disk is full: the copies made so far go in place first (freeing their originals), then
    // the others are made one by one (see makeCopies).
    full(copies);
    copies.push(...makeCopies(engine, again, false, full));
  }
  return copies;
}

/** renameCopies with the renames made on libuv's thread pool, IO_AHEAD at a time. */
async function renameCopiesAsync(copies: Copy[]): Promise<void> {
  const list = copies.splice(0);
  try {
    await eachLimit(list, IO_AHEAD, async (c) => {
      const { p, tmp } = c;
      const rec = p.rec;
      try {
        await commitCopyAsync(tmp, rec.path, plannedOf(p));
      } catch (err) {
        discardCopy(tmp);
        fail(p, err);
        return;
      }
      c.tmp = ""; // in place
      renamed(p);
    });
  } finally {
    for (const c of list) if (c.tmp !== "") copies.push(c); // not renamed (an unexpected throw): the caller discards them
  }
}

/**
 * A file whose copy was renamed over it: patched; other links to its old inode inside the batch
 * get the new version too (a link that cannot be replaced is noted on the record).
 */
function renamed(p: PlannedFile): void {
  const rec = p.rec;
  rec.write = "rename";
  rec.status = "patched";
  try {
    for (const other of p.links) relinkAtomically(rec.path, other);
    if (p.links.length) rec.relinked = p.links;
  } catch (err) {
    rec.error = toErrorRecord(err);
  }
}

/**
 * Makes copies durable, unless `synced` (a `syncfs` that started after they were written has
 * ended): one `syncfs`, or an fsync each for a few copies or where `sync -f` is unavailable. A copy
 * that cannot be made durable is removed and its file fails.
 */
function syncCopies(copies: Copy[], synced = false): void {
  if (synced || copies.length === 0) return;
  if (copies.length >= GROUP_SYNC_MIN && syncFileSystems(copies.map((c) => dirname(c.tmp)))) return;
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

/**
 * Renames durable copies over their originals (emptying the list), unless an original changed
 * since it was planned; other links to the old inode inside the batch get the new version too
 * (links outside, such as uv's cache, keep the old bytes).
 */
function renameCopies(copies: Copy[], dirs?: Set<string>): void {
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
    renamed(p);
  }
}

/**
 * Writes planned files as new copies renamed over the originals, in three steps: every copy is
 * made, all of them are made durable (one `syncfs`, or an fsync each for a small group or where
 * `sync -f` is unavailable), then each is renamed over its original unless that changed
 * meanwhile. A crash at any point leaves every path at either its old or its new version (plus
 * temp files the next run removes). When the disk fills up with the group's copies, those made so
 * far are put in place first and the copy is tried again, so a nearly full disk costs syncs, not
 * failures.
 */
function writeRenamedGroup(engine: CoreEngine, group: PlannedFile[], keepInfo: boolean, dirs: Set<string>): void {
  const copies = makeCopies(engine, group, keepInfo, (sofar) => {
    syncCopies(sofar);
    renameCopies(sofar, dirs);
  });
  try {
    syncCopies(copies);
    renameCopies(copies, dirs);
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
  const dirs = new Set<string>();
  writeRenamedGroup(engine, planned.filter((p) => p.plan && !writesInPlace(spec, p)), keepInfo, dirs);
  // Deferred: the batch makes the renames durable once at its end (`commitRenames`).
  if (!defer) for (const d of dirs) syncDir(d);
  writeInPlace(engine, planned.filter((p) => p.plan && writesInPlace(spec, p)), keepInfo, defer, journal);
}

/** Edits files in their own inodes under one undo record (see writeEditsInPlace). */
function writeInPlace(engine: CoreEngine, inPlace: PlannedFile[], keepInfo: boolean, defer: boolean, journal?: UndoJournal): void {
  if (inPlace.length === 0) return;
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

/** A file of a shard: its path, other hard links to it inside the batch, what the scan saw of it. */
export interface ShardFile {
  path: string;
  links?: string[] | undefined;
  stat?: ScannedStat | undefined;
}

/** Most bytes of planned edits a thread holds before it writes them (see ShardWriter). */
const HELD_BYTES = 8 * 1024 * 1024;

/** A sync of the file system holding a directory, that resolves true once it has ended (false: none was made). */
export type SyncRequest = (dir: string) => Promise<boolean>;

/**
 * A thread's writer for a batch's shards: each shard is planned, its in-place files edited under
 * the thread's journal, and its renamed copies made; those copies are made durable by a `syncfs`
 * (`sync`) that runs while the thread plans and copies the next shard, and are renamed over their
 * originals only once it has ended. So a thread never waits for the disk between two shards,
 * and every rename still follows the durability of its copy. A shard's records are final (and
 * given to its `done`) when its copies are in place: after the next shard's copies are made, or at
 * `finish`.
 */
export class ShardWriter {
  private pending: { copies: Copy[]; synced: Promise<boolean>; finish: () => void } | null = null;

  constructor(
    private readonly engine: CoreEngine,
    private readonly spec: BatchSpec,
    private readonly sync: SyncRequest | null,
    private readonly journal?: UndoJournal,
    /** Most bytes of planned edits held before they are written (tests lower it). */
    private readonly heldBytes = HELD_BYTES,
  ) {}

  async shard(
    files: ShardFile[],
    probe: LibraryProbe,
    onFile: (i: number) => void,
    done: (records: FileRecord[]) => void,
  ): Promise<void> {
    const { engine, spec } = this;
    const planned: PlannedFile[] = [];
    const copies: Copy[] = [];
    // Planned files are written in groups of at most HELD_BYTES of edits (a moved table's copy is
    // most of a big library's), so that a shard of big libraries is not all held in memory.
    let from = 0;
    let held = 0;
    const write = async (): Promise<void> => {
      const group = planned.slice(from);
      from = planned.length;
      held = 0;
      writeInPlace(engine, group.filter((p) => p.plan && writesInPlace(spec, p)), false, true, this.journal);
      copies.push(...(await makeCopiesAsync(engine, group.filter((p) => p.plan && !writesInPlace(spec, p)), (sofar) => {
        // The disk is full: the copies waiting for their sync (the last shard's, this shard's
        // earlier groups') and these go in place now.
        this.settleNow();
        copies.push(...sofar.splice(0));
        syncCopies(copies);
        renameCopies(copies);
      })));
      // Written: the edits need not wait for the renames in memory.
      for (const p of group) {
        if (p.plan) {
          p.plan.edits = [];
          p.plan.undo = [];
        }
      }
    };
    for (let i = 0; i < files.length; i++) {
      const f = files[i]!;
      const p = planOne(engine, f.path, spec, probe, false, f.links ?? [], f.stat);
      planned.push(p);
      if (!p.plan) {
        onFile(i);
        continue;
      }
      for (const e of p.plan.edits) held += e.bytes.length;
      if (held >= this.heldBytes) await write();
    }
    await write();
    const synced = copies.length > 0 && this.sync !== null ? this.sync(dirname(copies[0]!.tmp)) : Promise.resolve(false);
    await this.settle();
    this.pending = {
      copies,
      synced,
      finish: () => {
        planned.forEach((p, i) => p.plan && onFile(i));
        done(finalRecords(planned, spec));
      },
    };
  }

  /** Puts the last shard's copies in place (after their sync). */
  async finish(): Promise<void> {
    await this.settle();
  }

  /** Removes copies not yet in place (after an error): their files stay as they were. */
  abort(): void {
    const p = this.pending;
    this.pending = null;
    if (p) for (const c of p.copies) discardCopy(c.tmp);
  }

  private async settle(): Promise<void> {
    const p = this.pending;
    if (p === null) return;
    const synced = await p.synced;
    if (this.pending !== p) return; // put in place meanwhile (settleNow)
    this.pending = null;
    try {
      syncCopies(p.copies, synced);
      await renameCopiesAsync(p.copies);
    } finally {
      for (const c of p.copies) discardCopy(c.tmp);
    }
    p.finish();
  }

  /** settle, without waiting for the sync under way (a full disk): a sync of its own. */
  private settleNow(): void {
    const p = this.pending;
    if (p === null) return;
    this.pending = null;
    try {
      syncCopies(p.copies);
      renameCopies(p.copies);
    } finally {
      for (const c of p.copies) discardCopy(c.tmp);
    }
    p.finish();
  }
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
  files: ShardFile[],
  spec: BatchSpec,
  probe: LibraryProbe,
  onFile: (i: number) => void,
  journal?: UndoJournal,
): FileRecord[] {
  const planned = files.map((f, i) => {
    const p = planOne(engine, f.path, spec, probe, false, f.links ?? [], f.stat);
    if (!p.plan) onFile(i);
    return p;
  });
  writePlanned(engine, planned, spec, false, true, journal);
  planned.forEach((p, i) => p.plan && onFile(i));
  return finalRecords(planned, spec);
}

/** A shard's records as its thread gives them back (see BatchSpec.details). */
function finalRecords(planned: PlannedFile[], spec: BatchSpec): FileRecord[] {
  if (spec.details !== false) return planned.map((p) => p.rec);
  return planned.map(({ rec }) => {
    if (!rec.changed) return rec; // an unchanged file's summary is what the result cache keeps
    const { before: _b, after: _a, ...lean } = rec;
    return lean;
  });
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
