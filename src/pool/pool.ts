/**
 * The worker pool: piscina threads, each with one core instance made from the Module compiled
 * once here. A worker that dies costs only the file that killed it (see `run`); the batch goes on.
 */
import { existsSync, readdirSync, unlinkSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { MessageChannel, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import type { Piscina } from "piscina";
import { coreModule } from "../core/module.js";
import { ElfPatchError, ErrorCode } from "../errors.js";
import type { BatchSpec, FileRecord } from "../batch/process-file.js";
import type { ScannedFile } from "../scan/walk.js";
import type { Consulted } from "../shared/consulted.js";
import { undoRecord, type RecordPlace } from "../batch/journal.js";
import { STALE_TEMP, tempOwner } from "../batch/temp-names.js";
import type { QueueMessage, QueueTask, ShardMessage, ShardResult, ShardTask } from "./worker.js";
import type { ClaimPolicy, ShardQueue } from "./queue.js";

/** One Consulted of several (a shard whose files ran one per task). */
function mergeConsulted(all: Consulted[]): Consulted {
  return { files: all.flatMap((c) => c.files), names: all.flatMap((c) => c.names), reals: all.flatMap((c) => c.reals) };
}

/** What a shard gives back through the pool: records, and what decisions consulted (per task run). */
export interface PoolResult {
  records: FileRecord[];
  consulted: Consulted[];
}

/**
 * Undoes what the dead worker `thread` left of a shard: rolls back the undo records it announced
 * for the shard (files edited in place go back to their original bytes; its journal keeps the
 * records of the shards it finished, for the batch's commit) and removes its temp copies next to
 * the shard's files. Returns false when something could not be undone (the journal then stays for
 * the end of the batch, or the next run, to roll back; its files are not run again).
 */
function undoDeadShard(thread: number, records: RecordPlace[], paths: string[]): boolean {
  let ok = true;
  // Latest first: a journal is cut at each record undone.
  for (const r of [...records].reverse()) {
    try {
      if (existsSync(r.journal)) undoRecord(r.journal, r.at);
    } catch {
      ok = false;
    }
  }
  const deadThreads = (name: string): boolean => {
    const o = STALE_TEMP.test(name) ? tempOwner(name) : null;
    return o !== null && o.pid === process.pid && o.thread === thread;
  };
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    try {
      for (const name of readdirSync(dir)) if (deadThreads(name)) unlinkSync(join(dir, name));
    } catch {
      // the next run removes stale temp files
    }
  }
  return ok;
}

/** The compiled worker (workers must be .js files): build/js/pool/worker.js. */
export function workerPath(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, "build", "js", "pool", "worker.js");
    if (existsSync(candidate)) return candidate;
    const local = join(dir, "worker.js");
    if (existsSync(local) && dir.endsWith(join("js", "pool"))) return local;
    dir = dirname(dir);
  }
  throw new ElfPatchError(ErrorCode.INTERNAL, "Missing build/js/pool/worker.js; run npm run build");
}

/**
 * Where a batch's shards go once done: their records (in file order), by the index of their first
 * file in the batch, and what they consulted.
 */
export type ShardSink = (start: number, records: FileRecord[], consulted: Consulted | null) => void;

/**
 * One worker's share of a batch (see `Pool.drain`): messages of its task are handled here, by the
 * port's listener when the main thread waits, or by `pump()` between the main thread's own shards.
 */
class Drain {
  readonly port: MessagePort;
  /** The other end, for the worker's task. */
  readonly remote: MessagePort;
  thread: number | null = null;
  /** Shards claimed and not yet done (by first file), with their end and the undo records announced. */
  readonly open = new Map<number, { end: number; journals: RecordPlace[] }>();
  private current = -1;
  claimed = 0;

  constructor(
    private readonly fileAt: (global: number) => void,
    private readonly sink: ShardSink,
  ) {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.remote = port2;
    port1.on("message", (m: QueueMessage) => this.hear(m));
  }

  hear(m: QueueMessage): void {
    if (Array.isArray(m)) for (const i of m) this.fileAt(i);
    else if ("claim" in m) {
      this.open.set(m.claim[0], { end: m.claim[1], journals: [] });
      this.current = m.claim[0];
      this.claimed++;
    } else if ("journal" in m) this.open.get(this.current)?.journals.push(m.journal);
    else if ("done" in m) {
      this.open.delete(m.done);
      this.sink(m.done, m.records, m.consulted);
    } else this.thread = m.thread;
  }

  /** Handles every message queued so far (synchronously). */
  pump(): void {
    for (let m = receiveMessageOnPort(this.port); m !== undefined; m = receiveMessageOnPort(this.port)) this.hear(m.message as QueueMessage);
  }

  close(): void {
    this.pump();
    this.port.close();
  }
}

export function defaultJobs(): number {
  return availableParallelism();
}

export class Pool {
  /** The `dev:ino` keys of the batch's files, sent with every task (see BatchView). */
  private keys: string[] | undefined;

  private constructor(private readonly piscina: Piscina) {}

  /**
   * Starts `threads` workers. piscina is loaded here, so runs that need no pool never load it.
   * The workers need nothing of the batch to start (a batch may start them before its scan).
   */
  static async create(threads: number): Promise<Pool> {
    return (await Pool.starter())(threads);
  }

  /**
   * Loads piscina and returns what starts the workers synchronously: a caller in the middle of
   * synchronous work (the scan) can start them the moment it knows they will be needed, and they
   * boot while it goes on.
   */
  static async starter(): Promise<(threads: number) => Pool> {
    const { Piscina } = await import("piscina");
    return (threads) => new Pool(new Piscina({
      filename: workerPath(),
      workerData: { module: coreModule() },
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: 1000,
      // Two shards per worker: the next one waits in the worker, which starts it the moment the
      // current one is done, without the main thread (busy with shards of its own) dispatching it.
      concurrentTasksPerWorker: 1,
      // Workers keep little JS state (records of one shard): small heaps keep the batch's RSS flat
      // (a 4 MB young generation instead of 8: no slower, a few MB less per worker).
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 96 },
    }));
  }

  /**
   * Runs one shard; never rejects. A worker that dies costs only the file that killed it: what it
   * left of the shard is undone (the undo journals it announced are rolled back, its temp copies
   * removed), then the shard's files are run again one per task, and a file whose worker dies
   * again gets a POOL_WORKER_CRASHED record. A shard the worker never started is run again whole.
   * (With renamed copies, a file the dead worker had already replaced comes back `unchanged`.)
   */
  async run(files: ScannedFile[], spec: BatchSpec, onFile: (bytes: number) => void, track = false): Promise<PoolResult> {
    const counted = files.map(() => false);
    const done = (i: number): void => {
      if (counted[i]) return;
      counted[i] = true;
      onFile(files[i]!.size);
    };
    const out: PoolResult = { records: [], consulted: [] };
    await this.attempt(files.map((f, i) => ({ f, i })), spec, done, track, true, 0, out);
    return out;
  }

  private async attempt(
    items: { f: ScannedFile; i: number }[],
    spec: BatchSpec,
    done: (i: number) => void,
    track: boolean,
    split: boolean,
    tries: number,
    out: PoolResult,
  ): Promise<void> {
    const { port1, port2 } = new MessageChannel();
    let thread: number | null = null;
    const journals: RecordPlace[] = [];
    const hear = (m: ShardMessage): void => {
      if (typeof m === "number") done(items[m]!.i);
      else if ("thread" in m) thread = m.thread;
      else journals.push(m.journal);
    };
    port1.on("message", hear);
    const task: ShardTask = {
      paths: items.map((x) => x.f.path), links: items.map((x) => x.f.links), spec, progress: port2, track,
      ...(this.keys ? { keys: this.keys } : {}),
    };
    let failure: Error;
    try {
      const result = (await this.piscina.run(task, { transferList: [port2] })) as ShardResult;
      out.records.push(...result.records);
      if (result.consulted) out.consulted.push(result.consulted);
      for (const x of items) done(x.i); // messages still in flight when the shard resolved
      return;
    } catch (err) {
      failure = err as Error;
    } finally {
      // Whatever the worker said before it died is queued on the port: take all of it now.
      for (let m = receiveMessageOnPort(port1); m !== undefined; m = receiveMessageOnPort(port1)) hear(m.message as ShardMessage);
      port1.close();
    }
    if (thread === null && tries < 2) return this.attempt(items, spec, done, track, split, tries + 1, out); // never started
    const undone = thread === null || undoDeadShard(thread, journals, items.map((x) => x.f.path));
    if (undone && split && items.length > 1) {
      for (const x of items) await this.attempt([x], spec, done, track, false, 0, out);
      return;
    }
    this.crashed(items, failure, done, out);
  }

  /** Failed records for files whose worker died (left as they were). */
  private crashed(items: { f: ScannedFile; i: number }[], failure: Error, done: (i: number) => void, out: PoolResult): void {
    for (const x of items) {
      out.records.push({
        type: "file", path: x.f.path, status: "failed", changed: false, strategy: null, bytesAdded: 0, edits: 0,
        error: { code: ErrorCode.POOL_WORKER_CRASHED, message: `Worker crashed: ${failure.message}` },
      });
      done(x.i);
    }
  }

  private readonly drains = new Set<Drain>();

  /** The files of the batch the tasks belong to, by `dev:ino`: every worker sees them as the batch leaves them. */
  useBatch(keys: string[]): void {
    this.keys = keys;
  }

  /** Handles the messages the workers have queued so far (progress, finished shards). */
  pump(): void {
    for (const d of this.drains) d.pump();
  }

  /**
   * One worker claims shards from the back of `queue` (over `files`, largest first, with `policy`)
   * until it is empty (the main thread claims from the front); each finished shard goes to
   * `sink`, each finished file to `fileDone` (its index in `files`). Never rejects. When the worker
   * dies, what it left of the shard it held is undone and that shard's files are run again one per
   * task, as in `run`; then another worker carries on with the queue. If workers die before
   * claiming anything, twice, the rest of the queue is left to the caller.
   */
  async drain(
    files: ScannedFile[],
    queue: ShardQueue,
    policy: ClaimPolicy,
    spec: BatchSpec,
    fileDone: (index: number) => void,
    sink: ShardSink,
    track = false,
  ): Promise<void> {
    const paths = files.map((f) => f.path);
    const links = files.map((f) => f.links);
    const sizes = files.map((f) => f.size);
    const stats = new Float64Array(4 * files.length);
    files.forEach((f, i) => stats.set([f.dev, f.ino, f.nlink, f.ctimeMs], 4 * i));
    // Each file once, however often it ran (a dead worker's shard runs again).
    const counted = new Uint8Array(files.length);
    const once = (g: number): void => {
      if (counted[g]) return;
      counted[g] = 1;
      fileDone(g);
    };
    for (let idle = 0; queue.left > 0 && idle < 2; ) {
      const d = new Drain(once, sink);
      this.drains.add(d);
      const task: QueueTask = {
        paths, links, sizes, stats, policy, queue: queue.buffer, spec, port: d.remote, track, ...(this.keys ? { keys: this.keys } : {}),
      };
      let failure: Error | null = null;
      try {
        await this.piscina.run(task, { name: "drainQueue", transferList: [d.remote] });
      } catch (err) {
        failure = err as Error;
      } finally {
        d.close();
        this.drains.delete(d);
      }
      if (failure === null) return;
      idle = d.claimed === 0 ? idle + 1 : 0;
      for (const [start, { end, journals }] of d.open) {
        const shard = files.slice(start, end);
        const undone = d.thread === null || undoDeadShard(d.thread, journals, shard.map((f) => f.path));
        const out: PoolResult = { records: [], consulted: [] };
        const done = (k: number): void => once(start + k);
        const items = shard.map((f, k) => ({ f, i: k }));
        if (undone) for (const x of items) await this.attempt([x], spec, done, track, false, 0, out);
        else this.crashed(items, failure, done, out);
        // Records in the shard's file order, as a shard that went well gives them.
        const byPath = new Map(out.records.map((r) => [r.path, r]));
        const consulted = out.consulted.length ? mergeConsulted(out.consulted) : null;
        sink(start, shard.map((f) => byPath.get(f.path)!), consulted);
      }
    }
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}
