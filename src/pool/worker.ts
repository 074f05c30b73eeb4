/**
 * A pool worker: instantiates the core once from the compiled module the main thread shares
 * (`workerData.module`), then patches shards: `drainQueue` (the default task of a batch) takes
 * shards from the back of the batch's shared queue until none is left; `runShard` patches one
 * given shard (files run again after a worker died, and the tests). Files are read and written
 * here; only small plain records go back to the main thread.
 */
import { basename } from "node:path";
import { threadId, workerData, type MessagePort } from "node:worker_threads";
import { CoreEngine } from "../core/engine.js";
import { useCoreModule } from "../core/module.js";
import { processShard, ShardWriter, type BatchSpec, type FileRecord, type ScannedStat, type ShardFile } from "../batch/process-file.js";
import { BackgroundSync } from "../io/background-sync.js";
import { batchView, LibraryProbe } from "../policy/rpath.js";
import { takeConsulted, trackConsulted, type Consulted } from "../shared/consulted.js";
import { ShardQueue, type ClaimPolicy } from "./queue.js";
import { UndoJournal, type RecordPlace } from "../batch/journal.js";

export interface ShardTask {
  paths: string[];
  spec: BatchSpec;
  /**
   * Hears, in this order: `{ thread }` when the shard starts, `{ journal }` before an undo
   * journal is written, and the index of each finished file (for progress). What a worker that
   * died had said tells the main thread what to clean up (see Pool).
   */
  progress?: MessagePort;
  /** Note what decisions consult (for the result cache). */
  track?: boolean;
  /** Per path: other hard links inside the batch. */
  links?: (string[] | undefined)[];
  /** The batch's files by `dev:ino` (see BatchView); absent outside a batch. */
  keys?: string[];
}

/** A message of a shard's progress port. */
export type ShardMessage = number | { thread: number } | { journal: RecordPlace };

/** The whole batch's files (largest first), and the queue every thread claims shards of them from. */
export interface QueueTask {
  paths: string[];
  links: (string[] | undefined)[];
  sizes: number[];
  /** Per file, what the scan saw besides its size: `[dev, ino, nlink, ctimeMs]` (see ScannedStat). */
  stats?: Float64Array;
  policy: ClaimPolicy;
  queue: SharedArrayBuffer;
  spec: BatchSpec;
  /**
   * Hears, in this order: `{ thread }`, then per shard claimed `{ claim: [start, end] }` (indices
   * into the batch's files), `{ journal }` before each undo record is written (where it goes), the indices of the
   * files finished so far (for progress: a list every PROGRESS_MS at most, and the rest before the
   * shard's end), and `{ done: start, records, consulted }`.
   */
  port: MessagePort;
  track?: boolean;
  /** The batch's files by `dev:ino` (see BatchView). */
  keys?: string[];
}

export type QueueMessage =
  | number[]
  | { thread: number }
  | { claim: [number, number] }
  | { journal: RecordPlace }
  | { done: number; records: FileRecord[]; consulted: Consulted | null };

const data = workerData as { module: WebAssembly.Module };
useCoreModule(data.module);
const engine = new CoreEngine(data.module);
/** Decisions outside a batch see files as they are. */
const plain = new LibraryProbe(null);

/** Every thread resolves the batch's files as the batch leaves them (see BatchView). */
function probeFor(keys: string[] | undefined, spec: BatchSpec): LibraryProbe {
  return keys ? new LibraryProbe(batchView(keys, spec)) : plain;
}

/**
 * Fault injection for the tests only: a worker whose shard holds a file of this base name dies
 * right after writing the shard (edits made, journal not committed), as a crash would leave it.
 */
const dieAfterWriting = process.env.ELFPATCH_TEST_WORKER_DIES_AFTER ?? null;

/** What a shard gives back: its records, and the paths its decisions consulted (for the result cache). */
export interface ShardResult {
  records: FileRecord[];
  consulted: Consulted | null;
}

export default function runShard(task: ShardTask): ShardResult {
  const say = (m: ShardMessage): void => task.progress?.postMessage(m);
  say({ thread: threadId });
  const files = task.paths.map((path, i) => ({ path, links: task.links?.[i] }));
  trackConsulted(task.track === true);
  const journal = new UndoJournal((place) => say({ journal: place }));
  let records: FileRecord[];
  try {
    records = processShard(engine, files, task.spec, probeFor(task.keys, task.spec), (i) => say(i), journal);
  } finally {
    journal.close();
  }
  if (dieAfterWriting !== null && task.paths.some((p) => basename(p) === dieAfterWriting)) process.exit(70);
  return { records, consulted: task.track ? takeConsulted() : null };
}

/** What the scan saw of the batch's file `i`, if the task says. */
function scannedStat(task: QueueTask, i: number): ScannedStat | undefined {
  const s = task.stats;
  if (s === undefined || s.length < 4 * (i + 1)) return undefined;
  return { size: task.sizes[i]!, dev: s[4 * i]!, ino: s[4 * i + 1]!, nlink: s[4 * i + 2]!, ctimeMs: s[4 * i + 3]! };
}

/** Most time between two progress messages of a worker. */
const PROGRESS_MS = 100;

/** Patches shards claimed from the back of the batch's queue until it is empty; returns how many. */
export async function drainQueue(task: QueueTask): Promise<number> {
  const port = task.port;
  const say = (m: QueueMessage): void => port.postMessage(m);
  say({ thread: threadId });
  const queue = new ShardQueue(task.sizes, task.policy, task.queue);
  const probe = probeFor(task.keys, task.spec);
  let taken = 0;
  // One undo journal for all the shards this thread edits in place (a record per shard).
  const journal = new UndoJournal((place) => say({ journal: place }));
  // Renamed copies are made durable by a sync that runs while the next shard is worked on.
  const background = task.spec.write !== "in-place" && !task.spec.dryRun ? new BackgroundSync() : null;
  const writer = new ShardWriter(engine, task.spec, background !== null ? (d) => background.request(d) : null, journal);
  // Progress goes in lists: a message per file would cost the main thread as much to hear.
  let finished: number[] = [];
  let sent = performance.now();
  const flush = (): void => {
    if (finished.length === 0) return;
    say(finished);
    finished = [];
    sent = performance.now();
  };
  try {
    for (let c = queue.takeBack(); c !== null; c = queue.takeBack()) {
      const [start, end] = c;
      say({ claim: c });
      const files: ShardFile[] = [];
      for (let i = start; i < end; i++) files.push({ path: task.paths[i]!, links: task.links[i], stat: scannedStat(task, i) });
      trackConsulted(task.track === true);
      const fileDone = (k: number): void => {
        finished.push(start + k);
        if (performance.now() - sent >= PROGRESS_MS) flush();
      };
      await writer.shard(files, probe, fileDone, (records) => {
        flush();
        say({ done: start, records, consulted: task.track ? takeConsulted() : null });
      });
      if (dieAfterWriting !== null && files.some((f) => basename(f.path) === dieAfterWriting)) process.exit(70);
      taken++;
    }
    await writer.finish();
  } finally {
    writer.abort();
    background?.close();
    journal.close();
  }
  return taken;
}
