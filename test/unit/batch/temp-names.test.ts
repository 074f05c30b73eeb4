/**
 * The names of the files elfpatch leaves next to the files it edits carry the process and thread
 * that made them: the scan tells them from the tree's own files, a live process's are left alone,
 * and a dead worker's are removed by its process (see Pool).
 */
import { describe, expect, it } from "vitest";
import { ownerPid, STALE_TEMP, tempOwner, UNDO_SUFFIX } from "../../../src/batch/temp-names.js";

describe("temp file names", () => {
  it("give the process and thread of copies, journals and journals being written", () => {
    const copy = ".libz.so.1.elfpatch-4242-3-17.tmp";
    const journal = `.elfpatch-4242-3-9${UNDO_SUFFIX}`;
    const journalTemp = `${journal}.4242-3.tmp`;
    for (const name of [copy, journal, journalTemp]) {
      expect(tempOwner(name), name).toEqual({ pid: 4242, thread: 3 });
      expect(ownerPid(name), name).toBe(4242);
    }
    // Copies and journals being written are temp files; a complete journal is not (it is rolled back).
    expect(STALE_TEMP.test(copy)).toBe(true);
    expect(STALE_TEMP.test(journalTemp)).toBe(true);
    expect(STALE_TEMP.test(journal)).toBe(false);
  });

  it("name nobody for files of the tree that merely look alike", () => {
    for (const name of ["libz.so.1", "x.elfpatch-1-2.tmp", ".a.elfpatch-1-2-3.tmp.bak", "elfpatch-1-2-3.tmp", ".elfpatch-a-2-3.tmp"]) {
      expect(tempOwner(name), name).toBeNull();
      expect(ownerPid(name), name).toBeNull();
    }
  });
});
