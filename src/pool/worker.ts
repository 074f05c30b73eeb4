/**
 * A pool worker: instantiates the core once from the compiled module the main thread shares
 * (`workerData.module`), then patches whole shards. Files are read and written here; only small
 * plain records go back to the main thread.
 */
import { workerData, type MessagePort } from "node:worker_threads";
import { CoreEngine } from "../core/engine.js";
import { processShard, type BatchSpec, type FileRecord } from "../batch/process-file.js";
import { batchView, LibraryProbe } from "../policy/rpath.js";
import { takeConsulted, trackConsulted, type Consulted } from "../shared/consulted.js";

export interface ShardTask {
  paths: string[];
  spec: BatchSpec;
  /** Receives one message per finished file (its size), for progress. */
  progress?: MessagePort;
  sizes?: number[];
  /** Note what decisions consult (for the result cache). */
  track?: boolean;
  /** Per path: other hard links inside the batch. */
  links?: (string[] | undefined)[];
}

const data = workerData as { module: WebAssembly.Module; batch: { keys: string[]; spec: BatchSpec } | null };
const engine = new CoreEngine(data.module);
// Every thread resolves the batch's files as the batch leaves them (see BatchView).
const probe = new LibraryProbe(data.batch ? batchView(data.batch.keys, data.batch.spec) : null);

/** What a shard gives back: its records, and the paths its decisions consulted (for the result cache). */
export interface ShardResult {
  records: FileRecord[];
  consulted: Consulted | null;
}

export default function runShard(task: ShardTask): ShardResult {
  const files = task.paths.map((path, i) => ({ path, links: task.links?.[i] }));
  trackConsulted(task.track === true);
  const records = processShard(engine, files, task.spec, probe, (i) => task.progress?.postMessage(task.sizes?.[i] ?? 0));
  return { records, consulted: task.track ? takeConsulted() : null };
}
