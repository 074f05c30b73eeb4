/**
 * A whole batch: scan the PATHs, roll back journals an interrupted `--in-place` run left, remove
 * stale temp files of ours, patch every ELF file (in the pool, or inline for a single file or
 * `--jobs 1`), and aggregate the summary. Records come back sorted by path, so the same tree and
 * options give the same report.
 */
import { readdirSync, statSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { ErrorCode, toErrorRecord } from "../errors.js";
import type { Pool } from "../pool/pool.js";
import { scan, type ScannedFile, type ScanOptions, type SkippedFile } from "../scan/walk.js";
import type { ClaimPolicy } from "../pool/queue.js";
import { takeConsulted, trackConsulted } from "../shared/consulted.js";
import { ConsultedSet, type ResultCache } from "./cache.js";
import type { BatchSpec, FileRecord } from "./process-file.js";
import { ownedByLiveProcess, UNDO_SUFFIX } from "./temp-names.js";

let patient = false;

/**
 * A batch is short and does the same small steps for thousands of files: V8's optimizing compiler
 * spends more CPU compiling them (on the cores the batch's threads use) than the compiled code
 * saves. Functions are then optimized only after 8x the default amount of execution (132 KiB of
 * bytecode): an in-place batch of 3,156 files took 24-27 % less wall and CPU time. Set only once
 * files are to be opened (a flag change makes node compile the internal modules it loads
 * afterwards from source: 20 ms, which a run answered from the result cache would feel), and
 * before any worker starts (the flag is the process's).
 */
async function patientCompiler(): Promise<void> {
  if (patient) return;
  patient = true;
  const { setFlagsFromString } = await import("node:v8");
  setFlagsFromString("--interrupt-budget=1048576");
}

/** How long the main thread works alone before worker threads are started. */
const POOL_AFTER_MS = 60;
/**
 * Workers are started only when the work left, at the main thread's pace so far, would take
 * longer than this: a thread costs its start-up (loading piscina and the worker module,
 * instantiating the core) before it helps, so a re-run that is mostly done by then finishes
 * sooner alone.
 */
const POOL_WORTH_MS = 500;
/** From this many files to open on, workers start before the main thread's first shard. */
const EAGER_FILES = 256;

/** Most bytes of files in one shard written as renamed copies (a larger file makes its own shard). */
const SHARD_COPY_BYTES = 256 * 1024 * 1024;
/** Fewest bytes of files in one shard written as renamed copies (while more are left). */
const MIN_COPY_BYTES = 32 * 1024 * 1024;
/** Most bytes of files in one shard edited in place (or planned only). */
const SHARD_BYTES = 128 * 1024 * 1024;

export interface BatchOptions {
  jobs: number;
  /**
   * Raise V8's optimization threshold before the files are opened (the CLI does; a library
   * caller's process is left as it is). See `patientCompiler`.
   */
  patientCompiler?: boolean;
  scan?: ScanOptions;
  /** Called after each file with its size (for progress). */
  onFile?: (bytes: number) => void;
  /** Called once the scan knows how much there is to do. */
  onStart?: (files: number, bytes: number) => void;
  /** Answers from earlier runs; this run's are saved to it (unless dry-run). */
  cache?: ResultCache;
}

export interface BatchSummary {
  type: "summary";
  files: number;
  patched: number;
  wouldPatch: number;
  unchanged: number;
  skipped: number;
  failed: number;
  notElf: number;
  /** Files answered from the result cache (not opened). */
  cached: number;
  bytesAdded: number;
  strategies: Record<string, number>;
  recovered: string[];
  elapsedMs: number;
}

export interface BatchResult {
  records: FileRecord[];
  summary: BatchSummary;
}

function skippedRecord(s: SkippedFile): FileRecord {
  const r: FileRecord = { type: "file", path: s.path, status: "skipped", changed: false, strategy: null, bytesAdded: 0, edits: 0, skipReason: s.reason };
  if (s.of) r.duplicateOf = s.of;
  return r;
}

export async function runBatch(paths: string[], spec: BatchSpec, opts: BatchOptions): Promise<BatchResult> {
  // A first run over these PATHs (nothing cached) opens every file: its workers start early, and
  // boot while this thread scans (a run the cache answers needs none).
  // Not when the PATHs are a few files, not directories (`elfpatch patch FILE`, as scripts call it
  // per file): they never need a worker, and starting one costs such a run a third of its time.
  // With directories, once the scan has found EAGER_FILES files (a small tree needs no worker).
  const early: { pool: Pool | null } = { pool: null };
  const fewFiles = paths.length < EAGER_FILES && paths.every((p) => {
    try {
      return !statSync(p).isDirectory();
    } catch {
      return true;
    }
  });
  let onFound: ((n: number) => void) | undefined;
  if (opts.jobs > 1 && !fewFiles && (opts.cache === undefined || opts.cache.entries === 0)) {
    if (opts.patientCompiler) await patientCompiler();
    const { Pool } = await import("../pool/pool.js");
    const start = await Pool.starter();
    if (paths.length >= EAGER_FILES) early.pool = start(opts.jobs - 1);
    else onFound = (n) => {
      if (n === EAGER_FILES && early.pool === null) early.pool = start(opts.jobs - 1);
    };
  }
  try {
    return await scanAndRun(paths, spec, { ...opts, scan: { ...opts.scan, ...(onFound ? { onFound } : {}) } }, early);
  } finally {
    if (early.pool !== null) await early.pool.close(); // started for nothing: no file to open
  }
}

async function scanAndRun(paths: string[], spec: BatchSpec, opts: BatchOptions, early: { pool: Pool | null }): Promise<BatchResult> {
  const t0 = performance.now();
  const cache = opts.cache;
  const found = scan(paths, { ...opts.scan, sniff: false, ...(cache ? { cache } : {}) });
  const recovered: string[] = [];
  const records: FileRecord[] = [];
  for (const j of found.journals) {
    if (spec.dryRun) continue; // never write under --dry-run/--check
    if (ownedByLiveProcess(j)) {
      // Another run is editing under this journal right now: rolling it back would undo its work.
      const message = "An undo journal of a running elfpatch process; not rolled back";
      records.push({ type: "file", path: j, status: "failed", changed: false, strategy: null, bytesAdded: 0, edits: 0, error: { code: ErrorCode.IO_IN_USE, message } });
      continue;
    }
    const { recoverJournal } = await import("./journal.js");
    try {
      const r = recoverJournal(j);
      recovered.push(...r.files);
    } catch (err) {
      records.push({ type: "file", path: j, status: "failed", changed: false, strategy: null, bytesAdded: 0, edits: 0, error: toErrorRecord(err) });
    }
  }
  if (!spec.dryRun) for (const t of found.staleTemps) {
    if (ownedByLiveProcess(t)) continue; // a running process's copy in the making
    try {
      unlinkSync(t);
    } catch {
      // already gone
    }
  }
  for (const e of found.errors) {
    records.push({ type: "file", path: e.path, status: "failed", changed: false, strategy: null, bytesAdded: 0, edits: 0, error: e.error });
  }
  for (const s of found.skipped) {
    // Special files a walk meets are ignored like non-ELF files; one named as a PATH gets a record.
    if (s.reason !== "not-elf" && (s.reason !== "not-regular" || s.named) && s.reason !== "symlink-dangling") records.push(skippedRecord(s));
  }
  for (const r of found.cached) records.push(r); // (a spread of 100k+ records overflows the stack)
  const total = found.files.reduce((a, f) => a + f.size, 0);
  const byPath = cache ? new Map(found.files.map((f) => [f.path, f])) : null;
  const consulted = new ConsultedSet();
  trackConsulted(cache !== undefined);
  opts.onStart?.(found.files.length, total);
  const onFile = opts.onFile ?? (() => {});
  // Largest first (path order among equal sizes): the threads claim shards of this list (see
  // ShardQueue). Every shard costs a sync: in place, an undo journal made durable before its first
  // edit; renamed copies, one `syncfs` before the renames. Renamed copies exist next to their
  // originals until the shard's renames: at most SHARD_COPY_BYTES of extra disk space per thread,
  // and there the work goes with the bytes.
  const files = [...found.files].sort((a, b) => b.size - a.size || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  // A shard's plans are held until it is written (a moved table's copy among them: about a
  // library's .dynstr), so claims are guided by bytes too and hold at most SHARD_BYTES of files.
  // A claim of renamed copies costs a sync (the disk's cache flushed too): none smaller than
  // MIN_COPY_BYTES while there is more.
  const policy: ClaimPolicy = spec.write === "in-place" || spec.dryRun
    ? { threads: Math.max(1, opts.jobs), maxFiles: 256, maxBytes: SHARD_BYTES, byBytes: true }
    : { threads: Math.max(1, opts.jobs), maxFiles: 256, maxBytes: SHARD_COPY_BYTES, byBytes: true, minBytes: MIN_COPY_BYTES };
  // The code that opens and patches files is loaded only when there is a file to open (a re-run
  // answered from the result cache needs none of it).
  let notElf = 0;
  const opened = files.length > 0;
  if (opened) {
    const notElfPaths = new Set<string>();
    if (opts.patientCompiler) await patientCompiler();
    const pool = early.pool;
    early.pool = null; // workShards closes it
    for (const r of await workShards(files, policy, spec, opts.jobs, onFile, consulted, cache !== undefined, pool)) {
      if (r.skipReason !== "not-elf") records.push(r);
      else {
        notElfPaths.add(r.path);
        const f = byPath?.get(r.path);
        if (f) cache!.record(r.path, f, null);
      }
    }
    notElf = notElfPaths.size;
    if (notElf > 0) {
      // Other hard links to a file that turned out not to be ELF are not reported either.
      const kept = records.filter((r) => !(r.skipReason === "duplicate" && r.duplicateOf !== undefined && notElfPaths.has(r.duplicateOf)));
      notElf += records.length - kept.length;
      records.length = 0;
      for (const r of kept) records.push(r);
    }
  }
  await rollBackCrashedShards(records);
  if (opened && !spec.dryRun) (await import("./process-file.js")).commitRenames(records);
  // Group commit of the in-place edits: one sync, then the journals go.
  const pending = records.filter((r) => r.journal !== undefined);
  if (pending.length) try {
    const { commitJournals } = await import("./journal.js");
    commitJournals([...new Set(pending.map((r) => r.journal!))], pending.map((r) => r.path));
  } finally {
    for (const r of pending) delete r.journal;
  }
  if (cache && byPath) {
    for (const r of records) {
      const f = byPath.get(r.path);
      if (f) cache.record(r.path, f, r);
    }
    consulted.add(takeConsulted());
    trackConsulted(false);
    if (!spec.dryRun) cache.save(consulted);
  }
  // Often in order already (a cached re-run's records come from the sorted walk).
  let sorted = true;
  for (let i = 1; i < records.length && sorted; i++) sorted = records[i - 1]!.path <= records[i]!.path;
  if (!sorted) records.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const summary = summarize(records, found.skipped, recovered, performance.now() - t0);
  summary.cached = found.cached.length;
  summary.notElf += notElf;
  return { records, summary };
}

/**
 * Works through the files (largest first): the main thread is one of the `jobs` threads,
 * alongside jobs - 1 workers (one thread fewer to start, and one Wasm memory fewer: flatter peak
 * RSS). Every thread claims its next shard from one shared queue itself (see ShardQueue): the main
 * thread from the front (largest files), the workers from the back, so no thread waits for
 * another to hand it work. Workers start at once when the batch started them before its scan, or
 * for EAGER_FILES files or more; for a smaller batch only once the main thread has been busy for
 * POOL_AFTER_MS and the work left is worth POOL_WORTH_MS more at its pace: starting threads costs
 * more than a small re-run takes.
 */
async function workShards(
  files: ScannedFile[],
  policy: ClaimPolicy,
  spec: BatchSpec,
  jobs: number,
  onFile: (bytes: number) => void,
  consulted: ConsultedSet,
  track: boolean,
  started: Pool | null = null,
): Promise<FileRecord[]> {
  const [{ CoreEngine }, { batchView, LibraryProbe }, { ShardWriter }, { Pool }, { ShardQueue }, { UndoJournal }, { BackgroundSync }] = await Promise.all([
    import("../core/engine.js"), import("../policy/rpath.js"), import("./process-file.js"), import("../pool/pool.js"),
    import("../pool/queue.js"), import("./journal.js"), import("../io/background-sync.js"),
  ]);
  const engine = CoreEngine.create();
  // The files this run opens, by the `dev:ino` the scan saw: a decision that looks at one of them
  // sees it as the batch leaves it (files answered from the cache are left as they are).
  const keys = files.map((f) => `${f.dev}:${f.ino}`);
  const probe = new LibraryProbe(batchView(keys, spec));
  const workers = Math.min(jobs, files.length) - 1;
  const queue = new ShardQueue(files.map((f) => f.size), policy);
  // Each shard's records, by its first file.
  const results = new Map<number, FileRecord[]>();
  const counted = new Uint8Array(files.length);
  const fileDone = (i: number): void => {
    if (counted[i]) return;
    counted[i] = 1;
    onFile(files[i]!.size);
  };
  const sink = (start: number, recs: FileRecord[], c: import("../shared/consulted.js").Consulted | null): void => {
    results.set(start, recs);
    if (c) consulted.add(c);
  };
  let pool: Pool | null = null;
  const running: Promise<void>[] = [];
  const startPool = async (): Promise<void> => {
    const p = started ?? (await Pool.create(workers));
    started = null;
    p.useBatch(keys);
    pool = p;
    for (let i = 0; i < workers; i++) running.push(p.drain(files, queue, policy, spec, fileDone, sink, track));
  };
  if (workers > 0 && (started !== null || files.length >= EAGER_FILES)) await startPool();
  // Syncs while the batch goes on: edits in place are made durable by one sync at the end of the
  // batch, which background syncs leave little to write; renamed copies are made durable while
  // the next shard is planned and copied (ShardWriter).
  const background = spec.dryRun ? null : new BackgroundSync();
  // This thread's undo journal for the batch (a record per shard it edits in place).
  const journal = new UndoJournal();
  const writer = new ShardWriter(engine, spec, background !== null && spec.write !== "in-place" ? (d) => background.request(d) : null, journal);
  const t1 = performance.now();
  let done = 0;
  try {
    for (;;) {
      for (let c = queue.takeFront(); c !== null; c = queue.takeFront()) {
        const [start, end] = c;
        const shard = files.slice(start, end);
        const edited = journal.edited;
        await writer.shard(shard.map((f) => ({ path: f.path, links: f.links, stat: f })), probe, (k) => fileDone(start + k), (recs) => results.set(start, recs));
        done += shard.length;
        (pool as Pool | null)?.pump();
        // Only after a shard that edited files (a re-run edits none: no sync, no helper process).
        if (background !== null && spec.write === "in-place" && journal.edited > edited) {
          if (!background.busy) void background.request(dirname(shard[0]!.path));
          await new Promise<void>((r) => setImmediate(r)); // hear the helper's answers
        }
        const elapsed = performance.now() - t1;
        if (pool === null && workers > 0 && queue.left > 0 && elapsed > POOL_AFTER_MS && (elapsed / done) * (files.length - done) > POOL_WORTH_MS) {
          await startPool();
        }
      }
      await writer.finish();
      await Promise.all(running);
      await background?.settled();
      // Workers that kept dying before claiming anything leave the rest to this thread.
      if (queue.left === 0) break;
      running.length = 0;
    }
  } finally {
    writer.abort(); // (after an unexpected throw: no temp copy left)
    journal.close();
    background?.close();
    if (pool !== null) await (pool as Pool).close();
    if (started !== null) await (started as Pool).close();
  }
  const records: FileRecord[] = [];
  for (const start of [...results.keys()].sort((a, b) => a - b)) for (const r of results.get(start)!) records.push(r);
  return records;
}

/**
 * A worker that died mid-shard may have left files edited in place under a journal nobody will
 * commit: roll those files back now (the journals this process wrote are named after its pid),
 * so a failed file is never left modified.
 */
export async function rollBackCrashedShards(records: FileRecord[]): Promise<void> {
  const crashed = records.filter((r) => r.error?.code === ErrorCode.POOL_WORKER_CRASHED);
  if (crashed.length === 0) return;
  const { recoverJournal } = await import("./journal.js");
  const committed = new Set(records.map((r) => r.journal).filter((j) => j !== undefined));
  const prefix = `.elfpatch-${process.pid}-`;
  for (const dir of new Set(crashed.map((r) => dirname(r.path)))) {
    try {
      for (const name of readdirSync(dir)) {
        const j = join(dir, name);
        if (name.startsWith(prefix) && name.endsWith(UNDO_SUFFIX) && !committed.has(j)) recoverJournal(j);
      }
    } catch {
      // The journal stays for the next run (or `elfpatch recover`) to roll back.
    }
  }
}

function summarize(records: FileRecord[], skipped: SkippedFile[], recovered: string[], elapsedMs: number): BatchSummary {
  const s: BatchSummary = {
    type: "summary", files: 0, patched: 0, wouldPatch: 0, unchanged: 0, skipped: 0, failed: 0,
    notElf: skipped.filter((k) => k.reason === "not-elf").length, cached: 0, bytesAdded: 0, strategies: {}, recovered,
    elapsedMs: Math.round(elapsedMs),
  };
  for (const r of records) {
    s.files++;
    if (r.status === "patched") s.patched++;
    else if (r.status === "would-patch") s.wouldPatch++;
    else if (r.status === "unchanged") s.unchanged++;
    else if (r.status === "skipped") s.skipped++;
    else s.failed++;
    if (r.status !== "patched" && r.status !== "would-patch") continue;
    s.bytesAdded += r.bytesAdded;
    if (r.strategy) s.strategies[r.strategy] = (s.strategies[r.strategy] ?? 0) + 1;
  }
  return s;
}
