/**
 * A pool worker: instantiates the core once from the compiled module the main thread shares
 * (`workerData.module`), then patches whole shards. Files are read and written here; only small
 * plain records go back to the main thread.
 */
import { basename } from "node:path";
import { threadId, workerData, type MessagePort } from "node:worker_threads";
import { CoreEngine } from "../core/engine.js";
import { processShard, type BatchSpec, type FileRecord } from "../batch/process-file.js";
import { batchView, LibraryProbe } from "../policy/rpath.js";
import { takeConsulted, trackConsulted, type Consulted } from "../shared/consulted.js";

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
}

/** A message of a shard's progress port. */
export type ShardMessage = number | { thread: number } | { journal: string };

const data = workerData as { module: WebAssembly.Module; batch: { keys: string[]; spec: BatchSpec } | null };
const engine = new CoreEngine(data.module);
// Every thread resolves the batch's files as the batch leaves them (see BatchView).
const probe = new LibraryProbe(data.batch ? batchView(data.batch.keys, data.batch.spec) : null);

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
  const records = processShard(engine, files, task.spec, probe, (i) => say(i), (journal) => say({ journal }));
  if (dieAfterWriting !== null && task.paths.some((p) => basename(p) === dieAfterWriting)) process.exit(70);
  return { records, consulted: task.track ? takeConsulted() : null };
}
