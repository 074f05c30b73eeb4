/**
 * The pool: workers share the compiled module, patch whole shards, and a worker that dies costs
 * its shard POOL_WORKER_CRASHED records, never the batch; the pool keeps serving afterwards.
 */
import { copyFileSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Pool } from "../../src/pool/pool.js";
import type { BatchSpec } from "../../src/batch/process-file.js";
import type { ScannedFile } from "../../src/scan/walk.js";

const HOST = "/usr/lib/x86_64-linux-gnu";
const LIBS = ["libz.so.1", "libdl.so.2", "libutil.so.1", "libm.so.6"];

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
      expect(consulted).toBeNull(); // noted only for a batch with a result cache
      expect(recs.map((r) => r.status)).toEqual(files.map(() => "would-patch"));
      expect(progress).toBe(files.length);
    } finally {
      await pool.close();
    }
  });

  it("turns a worker that dies into POOL_WORKER_CRASHED records and keeps serving", async () => {
    const pool = await Pool.create(1);
    const internal = pool as unknown as { piscina: { threads: { terminate(): Promise<number> }[] } };
    try {
      // Warm up so the thread exists, then kill it while it holds the next shard.
      await pool.run(files.slice(0, 1), spec, () => {});
      const running = pool.run(files, spec, () => {});
      await Promise.all(internal.piscina.threads.map((t) => t.terminate()));
      const crashed = (await running).records;
      expect(crashed).toHaveLength(files.length);
      for (const r of crashed) {
        expect(r.status).toBe("failed");
        expect(r.error?.code).toBe("POOL_WORKER_CRASHED");
      }
      // A new worker takes the next shard.
      const again = (await pool.run(files, spec, () => {})).records;
      expect(again.map((r) => r.status)).toEqual(files.map(() => "would-patch"));
    } finally {
      await pool.close();
    }
  });
});
