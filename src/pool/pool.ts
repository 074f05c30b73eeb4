/**
 * The worker pool: piscina threads, each with one core instance made from the Module compiled
 * once here. A shard whose worker dies yields a POOL_WORKER_CRASHED record per file; the batch
 * goes on.
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MessageChannel } from "node:worker_threads";
import type { Piscina } from "piscina";
import { coreModule } from "../core/module.js";
import { ElfPatchError, ErrorCode } from "../errors.js";
import type { BatchSpec, FileRecord } from "../batch/process-file.js";
import type { ScannedFile } from "../scan/walk.js";
import type { ShardResult, ShardTask } from "./worker.js";

/** The compiled worker (workers must be .js files): build/js/pool/worker.js. */
export function workerPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, "build", "js", "pool", "worker.js");
    if (existsSync(candidate)) return candidate;
    const local = join(dir, "worker.js");
    if (existsSync(local) && dir.endsWith(join("js", "pool"))) return local;
    dir = dirname(dir);
  }
  throw new ElfPatchError(ErrorCode.INTERNAL, "Missing build/js/pool/worker.js; run npm run build");
}

export function defaultJobs(): number {
  return availableParallelism();
}

export class Pool {
  private constructor(private readonly piscina: Piscina) {}

  /** Starts `threads` workers. piscina is loaded here, so runs that need no pool never load it. */
  static async create(threads: number, batch: { keys: string[]; spec: BatchSpec } | null = null): Promise<Pool> {
    const { Piscina } = await import("piscina");
    return new Pool(new Piscina({
      filename: workerPath(),
      // `batch`: the keys of the batch's files, for every worker's view of them (BatchView).
      workerData: { module: coreModule(), batch },
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: 1000,
      // Two shards per worker: the next one waits in the worker, which starts it the moment the
      // current one is done, without the main thread (busy with shards of its own) dispatching it.
      concurrentTasksPerWorker: 2,
      // Workers keep little JS state (records of one shard): small heaps keep the batch's RSS flat.
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 96 },
    }));
  }

  /** Runs one shard; never rejects: a crashed worker becomes error records. */
  async run(files: ScannedFile[], spec: BatchSpec, onFile: (bytes: number) => void, track = false): Promise<ShardResult> {
    const { port1, port2 } = new MessageChannel();
    let reported = 0;
    port1.on("message", (bytes: number) => {
      if (reported >= files.length) return; // already counted when the shard resolved
      reported++;
      onFile(bytes);
    });
    const task: ShardTask = {
      paths: files.map((f) => f.path), sizes: files.map((f) => f.size), links: files.map((f) => f.links), spec, progress: port2, track,
    };
    try {
      const result = (await this.piscina.run(task, { transferList: [port2] })) as ShardResult;
      // Messages still in flight when the shard resolves: count those files now.
      for (let i = reported; i < files.length; i++) onFile(files[i]!.size);
      reported = files.length;
      return result;
    } catch (err) {
      const records = files.map((f) => ({
        type: "file" as const, path: f.path, status: "failed" as const, changed: false, strategy: null, bytesAdded: 0, edits: 0,
        error: { code: ErrorCode.POOL_WORKER_CRASHED, message: `Worker crashed: ${(err as Error).message}` },
      }));
      return { records, consulted: null };
    } finally {
      port1.close();
    }
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}
