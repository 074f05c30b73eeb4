/**
 * The pool: workers share the compiled module and patch whole shards. A worker that dies costs
 * only the file that killed it (a POOL_WORKER_CRASHED record, that file left as it was): what the
 * dead worker left of its shard is undone and the other files are patched again; the pool keeps
 * serving afterwards.
 */
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Pool } from "../../src/pool/pool.js";
import { ShardQueue } from "../../src/pool/queue.js";
import type { FileRecord } from "../../src/batch/process-file.js";
import { commitJournals } from "../../src/batch/journal.js";
import { readelfInfo } from "../support/readelf.js";
import type { BatchSpec } from "../../src/batch/process-file.js";
import type { ScannedFile } from "../../src/scan/walk.js";

const HOST = "/usr/lib/x86_64-linux-gnu";
const LIBS = ["libz.so.1", "libdl.so.2", "libutil.so.1", "libm.so.6"];

/**
 * After a worker died: the `n` files other than the one that killed it are patched (each with its
 * journal waiting for the batch's group commit) with this run path; committing their journals
 * leaves nothing of ours next to the files (the dead shards' journals were rolled back and removed).
 */
async function expectOthersPatched(records: FileRecord[], n: number, rpath: string, work: string): Promise<void> {
  const others = records.filter((r) => r.status !== "failed");
  expect(others).toHaveLength(n);
  for (const r of others) {
    expect(r.status).toBe("patched");
    expect(r.journal).toBeDefined();
    expect((await readelfInfo(r.path)).rpath).toBe(rpath);
  }
  commitJournals([...new Set(others.map((r) => r.journal!))], others.map((r) => r.path));
  expect(readdirSync(work).filter((name) => name.includes(".elfpatch-"))).toEqual([]);
}

describe("worker pool", () => {
  let dir: string;
  let files: ScannedFile[];
  const spec: BatchSpec = { req: { noDefaultLib: true }, dryRun: true };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-pool-"));
    for (const l of LIBS) copyFileSync(join(HOST, l), join(dir, l));
    files = readdirSync(dir).map((n) => {
      const st = statSync(join(dir, n));
      return { path: join(dir, n), size: st.size, dev: st.dev, ino: st.ino, nlink: st.nlink, sig: "", ctimeMs: st.ctimeMs };
    });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("patches a shard in a worker and reports progress per file", async () => {
    const pool = await Pool.create(1);
    let progress = 0;
    try {
      const { records: recs, consulted } = await pool.run(files, spec, () => progress++);
      expect(consulted).toEqual([]); // noted only for a batch with a result cache
      expect(recs.map((r) => r.status)).toEqual(files.map(() => "would-patch"));
      expect(progress).toBe(files.length);
    } finally {
      await pool.close();
    }
  });

  it("runs a shard again when its worker dies under it, and keeps serving", async () => {
    const pool = await Pool.create(1);
    const internal = pool as unknown as { piscina: { threads: { terminate(): Promise<number> }[] } };
    try {
      // Warm up so the thread exists, then kill it while it holds the next shard.
      await pool.run(files.slice(0, 1), spec, () => {});
      let progress = 0;
      const running = pool.run(files, spec, () => progress++);
      await Promise.all(internal.piscina.threads.map((t) => t.terminate()));
      const again = await running;
      expect(again.records.map((r) => [r.path, r.status])).toEqual(files.map((f) => [f.path, "would-patch"]));
      expect(progress).toBe(files.length); // each file counted once, however often it ran
      const next = (await pool.run(files, spec, () => {})).records;
      expect(next.map((r) => r.status)).toEqual(files.map(() => "would-patch"));
    } finally {
      await pool.close();
    }
  });

  it("costs only the file whose worker dies: the rest of its shard is undone and patched again", async () => {
    const work = mkdtempSync(join(tmpdir(), "elfpatch-pool-crash-"));
    const victim = "libdl.so.2";
    process.env.ELFPATCH_TEST_WORKER_DIES_AFTER = victim; // read by the workers this pool starts
    const pool = await Pool.create(1);
    try {
      for (const l of LIBS) copyFileSync(join(HOST, l), join(work, l));
      const shard: ScannedFile[] = readdirSync(work).sort().map((n) => {
        const st = statSync(join(work, n));
        return { path: join(work, n), size: st.size, dev: st.dev, ino: st.ino, nlink: st.nlink, sig: "", ctimeMs: st.ctimeMs };
      });
      const inPlace: BatchSpec = { req: {}, rpath: { set: "/opt/elfpatch-crash-test/lib", force: true }, write: "in-place" };
      let progress = 0;
      const { records } = await pool.run(shard, inPlace, () => progress++);
      expect(progress).toBe(shard.length);
      const byName = new Map(records.map((r) => [r.path.slice(work.length + 1), r]));
      expect([...byName.keys()].sort()).toEqual([...LIBS].sort());
      // The victim died twice (with its shard, then alone): failed, and its bytes are the original's.
      expect(byName.get(victim)!.status).toBe("failed");
      expect(byName.get(victim)!.error?.code).toBe("POOL_WORKER_CRASHED");
      expect(readFileSync(join(work, victim)).equals(readFileSync(join(HOST, victim)))).toBe(true);
      // Every other file was rolled back with the dead shard, then patched on its own.
      await expectOthersPatched(records, LIBS.length - 1, "/opt/elfpatch-crash-test/lib", work);
    } finally {
      await pool.close();
      delete process.env.ELFPATCH_TEST_WORKER_DIES_AFTER;
      rmSync(work, { recursive: true, force: true });
    }
  });

  it("drains a shared queue from the back while another thread claims from the front; each file is claimed once", async () => {
    const pool = await Pool.create(1);
    try {
      // The four libraries twice, one file per claim.
      const all = [...files, ...files];
      const policy = { threads: 2, maxFiles: 1 };
      const queue = new ShardQueue(all.map((f) => f.size), policy);
      const got = new Map<number, FileRecord[]>();
      const progress: number[] = [];
      const draining = pool.drain(all, queue, policy, spec, (i) => progress.push(i), (start, recs) => {
        expect(got.has(start)).toBe(false);
        got.set(start, recs);
      });
      // This thread claims from the front meanwhile, as the batch's main thread does.
      const mine: number[] = [];
      for (let c = queue.takeFront(); c !== null; c = queue.takeFront()) mine.push(c[0]);
      await draining;
      expect(queue.left).toBe(0);
      const theirs = [...got.keys()];
      expect([...mine, ...theirs].sort((a, b) => a - b)).toEqual(all.map((_, i) => i));
      for (const [i, recs] of got) expect(recs.map((r) => [r.path, r.status])).toEqual([[all[i]!.path, "would-patch"]]);
      expect(progress.sort((a, b) => a - b)).toEqual(theirs.sort((a, b) => a - b));
    } finally {
      await pool.close();
    }
  });

  it("a worker that dies while draining the queue costs only its file; another worker takes the rest", async () => {
    const work = mkdtempSync(join(tmpdir(), "elfpatch-pool-drain-"));
    const victim = "libdl.so.2";
    process.env.ELFPATCH_TEST_WORKER_DIES_AFTER = victim;
    const pool = await Pool.create(1);
    try {
      // Eight files (the four libraries, and copies named b-*): in name order the worker's claims
      // from the back are [6, 8), then [4, 6), which holds the victim (4) and libm (5).
      for (const l of LIBS) {
        copyFileSync(join(HOST, l), join(work, l));
        copyFileSync(join(HOST, l), join(work, `b-${l}`));
      }
      const all: ScannedFile[] = readdirSync(work).sort().map((n) => {
        const st = statSync(join(work, n));
        return { path: join(work, n), size: st.size, dev: st.dev, ino: st.ino, nlink: st.nlink, sig: "", ctimeMs: st.ctimeMs };
      });
      expect(all.findIndex((f) => f.path.endsWith(`/${victim}`))).toBe(4);
      const policy = { threads: 1, maxFiles: 2 };
      const queue = new ShardQueue(all.map((f) => f.size), policy);
      const inPlace: BatchSpec = { req: {}, rpath: { set: "/opt/elfpatch-drain-test/lib", force: true }, write: "in-place" };
      const got = new Map<number, FileRecord[]>();
      const progress: number[] = [];
      await pool.drain(all, queue, policy, inPlace, (i) => progress.push(i), (start, recs) => got.set(start, recs));
      expect(queue.left).toBe(0);
      expect(got.get(4)!.map((r) => r.path)).toEqual([all[4]!.path, all[5]!.path]); // the dead shard's records, in order
      expect(progress.sort((a, b) => a - b)).toEqual(all.map((_, i) => i)); // every file counted once
      const records = [...got.values()].flat();
      expect(records.map((r) => r.path).sort()).toEqual(all.map((f) => f.path));
      const byName = new Map(records.map((r) => [r.path.slice(work.length + 1), r]));
      expect(byName.get(victim)!.status).toBe("failed");
      expect(byName.get(victim)!.error?.code).toBe("POOL_WORKER_CRASHED");
      expect(readFileSync(join(work, victim)).equals(readFileSync(join(HOST, victim)))).toBe(true);
      await expectOthersPatched(records, all.length - 1, "/opt/elfpatch-drain-test/lib", work);
    } finally {
      await pool.close();
      delete process.env.ELFPATCH_TEST_WORKER_DIES_AFTER;
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe("a worker plans from what the scan saw", () => {
  it("trusts the scan's stat for a file that needs no edit, and plans a file replaced since the scan as it is now", async () => {
    const work = mkdtempSync(join(tmpdir(), "elfpatch-pool-scanned-"));
    const pool = await Pool.create(1);
    try {
      const paths = LIBS.map((l) => join(work, l));
      for (const l of LIBS) copyFileSync(join(HOST, l), join(work, l));
      // The scan's view: a link count no file has (an unchanged file's record shows the scan's),
      // and libz as it was before another library replaced it.
      const files: ScannedFile[] = paths.map((p) => {
        const st = statSync(p);
        return { path: p, size: st.size, dev: st.dev, ino: st.ino, nlink: 7, sig: "", ctimeMs: st.ctimeMs };
      });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30); // past the timestamp tick
      copyFileSync(join(HOST, "libutil.so.1"), join(work, "new"));
      renameSync(join(work, "new"), paths[0]!);
      const policy = { threads: 1, maxFiles: 1 };
      /** Records of `batch` drained by the worker alone under `spec`. */
      const drained = async (batch: ScannedFile[], s: BatchSpec): Promise<FileRecord[]> => {
        const got = new Map<number, FileRecord[]>();
        await pool.drain(batch, new ShardQueue(batch.map((f) => f.size), policy), policy, s, () => {}, (start, recs) => got.set(start, recs));
        return [...got.keys()].sort((a, b) => a - b).flatMap((k) => got.get(k)!);
      };
      const unchanged = await drained(files.slice(1), { req: {}, dryRun: true });
      expect(unchanged.map((r) => [r.path, r.status, r.links])).toEqual(files.slice(1).map((f) => [f.path, "unchanged", 7]));
      // libz (now libutil) gets a run path it has no room for: the plan is made from an fstat.
      const [replaced] = await drained(files.slice(0, 1), { req: {}, rpath: { set: "/opt/elfpatch-scanned-test/lib", force: true }, dryRun: true });
      expect(replaced).toMatchObject({ status: "would-patch", size: statSync(paths[0]!).size, links: 1 });
      expect(replaced!.before?.soname).toBe((await readelfInfo(join(HOST, "libutil.so.1"))).soname);
    } finally {
      await pool.close();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
