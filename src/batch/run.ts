/**
 * A whole batch: scan the PATHs, roll back journals an interrupted `--in-place` run left, remove
 * stale temp files of ours, patch every ELF file (in the pool, or inline for a single file or
 * `--jobs 1`), and aggregate the summary. Records come back sorted by path, so the same tree and
 * options give the same report.
 */
import { readdirSync, unlinkSync } from "node:fs";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { ErrorCode, toErrorRecord } from "../errors.js";
import type { Pool } from "../pool/pool.js";
import { scan, type ScannedFile, type ScanOptions, type SkippedFile } from "../scan/walk.js";
import { shard } from "../scan/shard.js";
import { takeConsulted, trackConsulted } from "../shared/consulted.js";
import { ConsultedSet, type ResultCache } from "./cache.js";
import type { BatchSpec, FileRecord } from "./process-file.js";
import { ownedByLiveProcess, UNDO_SUFFIX } from "./temp-names.js";

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

export interface BatchOptions {
  jobs: number;
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
    if (s.reason !== "not-elf" && s.reason !== "not-regular" && s.reason !== "symlink-dangling") records.push(skippedRecord(s));
  }
  for (const r of found.cached) records.push(r); // (a spread of 100k+ records overflows the stack)
  const total = found.files.reduce((a, f) => a + f.size, 0);
  const byPath = cache ? new Map(found.files.map((f) => [f.path, f])) : null;
  const consulted = new ConsultedSet();
  trackConsulted(cache !== undefined);
  opts.onStart?.(found.files.length, total);
  const onFile = opts.onFile ?? (() => {});
  // Every shard costs a sync: in place, an undo journal made durable (two fsyncs) before its first
  // edit; renamed copies, one `syncfs` before the renames. So: fewer, larger shards. Renamed
  // copies exist next to their originals until the shard's renames: at most SHARD_COPY_BYTES of
  // extra disk space per thread.
  const shards = shard(found.files, {
    threads: Math.max(1, opts.jobs), maxFiles: 256, ...(spec.write === "in-place" ? {} : { maxBytes: SHARD_COPY_BYTES }),
  });
  // The code that opens and patches files is loaded only when there is a file to open (a re-run
  // answered from the result cache needs none of it).
  let notElf = 0;
  const opened = shards.length > 0;
  if (opened) {
    const notElfPaths = new Set<string>();
    for (const r of await workShards(shards, spec, opts.jobs, onFile, consulted, cache !== undefined)) {
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
 * Works through the shards: the main thread is one of the `jobs` threads, alongside jobs - 1
 * workers (one thread fewer to start, and one Wasm memory fewer: flatter peak RSS). Every thread
 * takes its next shard from one shared queue itself (see ShardQueue): the main thread from the
 * front (largest files), the workers from the back, so no thread waits for another to hand it
 * work. Workers start at once for a batch of EAGER_FILES files or more (their start-up then
 * overlaps the main thread's first shards); for a smaller one only once the main thread has been
 * busy for POOL_AFTER_MS and the work left is worth POOL_WORTH_MS more at its pace: starting
 * threads costs more than a small re-run takes.
 */
async function workShards(
  shards: ScannedFile[][],
  spec: BatchSpec,
  jobs: number,
  onFile: (bytes: number) => void,
  consulted: ConsultedSet,
  track: boolean,
): Promise<FileRecord[]> {
  const [{ CoreEngine }, { batchView, LibraryProbe }, { processShard }, { Pool }, { ShardQueue }] = await Promise.all([
    import("../core/engine.js"), import("../policy/rpath.js"), import("./process-file.js"), import("../pool/pool.js"),
    import("../pool/queue.js"),
  ]);
  const engine = CoreEngine.create();
  // The files this run opens, by the `dev:ino` the scan saw: a decision that looks at one of them
  // sees it as the batch leaves it (files answered from the cache are left as they are).
  const keys: string[] = [];
  for (const s of shards) for (const f of s) keys.push(`${f.dev}:${f.ino}`);
  const probe = new LibraryProbe(batchView(keys, spec));
  const workers = Math.min(jobs, shards.length) - 1;
  const queue = new ShardQueue(shards.length);
  const results: FileRecord[][] = new Array<FileRecord[]>(shards.length);
  // Progress: each file once, by its index in the batch (shards in order).
  const sizes: number[] = [];
  for (const s of shards) for (const f of s) sizes.push(f.size);
  const counted = new Uint8Array(sizes.length);
  const fileDone = (i: number): void => {
    if (counted[i]) return;
    counted[i] = 1;
    onFile(sizes[i]!);
  };
  const first: number[] = [];
  for (let i = 0, n = 0; i < shards.length; n += shards[i]!.length, i++) first.push(n);
  const sink = (i: number, recs: FileRecord[], c: import("../shared/consulted.js").Consulted | null): void => {
    results[i] = recs;
    if (c) consulted.add(c);
  };
  let pool: Pool | null = null;
  const running: Promise<void>[] = [];
  const startPool = async (): Promise<void> => {
    const p = await Pool.create(workers, { keys, spec });
    pool = p;
    for (let i = 0; i < workers; i++) running.push(p.drain(shards, queue, spec, fileDone, sink, track));
  };
  const total = sizes.length;
  if (workers > 0 && total >= EAGER_FILES) await startPool();
  // EXPERIMENT: background syncs while editing in place.
  let syncing: Promise<void> | null = null;
  const bgSync = (dir: string): void => {
    if (syncing !== null || spec.write !== "in-place" || spec.dryRun) return;
    const c = spawn("sync", ["-f", dir], { stdio: "ignore" });
    syncing = new Promise<void>((r) => c.once("exit", () => { syncing = null; r(); }));
  };
  const t1 = performance.now();
  let done = 0;
  try {
    for (;;) {
      for (let i = queue.takeFront(); i >= 0; i = queue.takeFront()) {
        const files = shards[i]!;
        const base = first[i]!;
        results[i] = processShard(engine, files, spec, probe, (k) => fileDone(base + k));
        done += files.length;
        (pool as Pool | null)?.pump();
        bgSync(dirname(files[0]!.path));
        await new Promise<void>((r) => setImmediate(r));
        const elapsed = performance.now() - t1;
        if (pool === null && workers > 0 && queue.left > 0 && elapsed > POOL_AFTER_MS && (elapsed / done) * (total - done) > POOL_WORTH_MS) {
          await startPool();
        }
      }
      await Promise.all(running);
      if (syncing) await syncing;
      // Workers that kept dying before taking a shard leave the rest to this thread.
      if (queue.left === 0) break;
      running.length = 0;
    }
  } finally {
    if (pool !== null) await (pool as Pool).close();
  }
  const records: FileRecord[] = [];
  for (const r of results) if (r) for (const x of r) records.push(x);
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
