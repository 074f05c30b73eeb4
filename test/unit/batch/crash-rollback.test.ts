/**
 * A worker that dies after editing files in place leaves a journal nobody commits: the batch rolls
 * those files back before it ends, so a failed file is never left modified.
 */
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { writeEditsInPlace, UNDO_SUFFIX } from "../../../src/batch/journal.js";
import { rollBackCrashedShards } from "../../../src/batch/run.js";
import type { FileRecord } from "../../../src/batch/process-file.js";

describe("rollBackCrashedShards", () => {
  it("rolls back files edited under an uncommitted journal of this process, and only those", async () => {
    const dir = mkdtempSync(join(tmpdir(), "elfpatch-crash-"));
    try {
      const a = join(dir, "a.so");
      const b = join(dir, "b.so");
      copyFileSync("/usr/lib/x86_64-linux-gnu/libz.so.1", a);
      copyFileSync("/usr/lib/x86_64-linux-gnu/libz.so.1", b);
      const orig = readFileSync(a);
      const edit = (p: string) => ({ path: p, edits: [{ offset: 64, bytes: new Uint8Array([1, 2, 3]) }], newSize: orig.length, verify: () => {} });
      const crashed = writeEditsInPlace([edit(a)], true); // the "worker" that died: journal left behind
      const committed = writeEditsInPlace([edit(b)], true); // a shard whose commit is still to come
      expect(crashed.journal).not.toBeNull();
      expect(readFileSync(a).equals(orig)).toBe(false);
      const base = { type: "file" as const, changed: false, strategy: null, bytesAdded: 0, edits: 0 };
      const records: FileRecord[] = [
        { ...base, path: a, status: "failed", error: { code: "POOL_WORKER_CRASHED", message: "Worker crashed" } },
        { ...base, path: b, status: "patched", journal: committed.journal! },
      ];
      await rollBackCrashedShards(records);
      expect(readFileSync(a).equals(orig)).toBe(true); // rolled back
      expect(readFileSync(b).equals(orig)).toBe(false); // still waiting for its commit
      const journals = readdirSync(dir).filter((n) => n.endsWith(UNDO_SUFFIX)).map((n) => join(dir, n));
      expect(journals).toEqual([committed.journal]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
