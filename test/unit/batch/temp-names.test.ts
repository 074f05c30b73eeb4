/**
 * The names of the files elfpatch leaves next to the files it edits carry the process and thread
 * that made them: the scan tells them from the tree's own files, a live process's are left alone,
 * and a dead worker's are removed by its process (see Pool).
 */
import { describe, expect, it } from "vitest";
import { basename, join } from "node:path";
import { ownerPid, STALE_TEMP, tempOwner, UNDO_SUFFIX } from "../../../src/batch/temp-names.js";
import { tempPathFor } from "../../../src/io/safe-write.js";

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

  it("copies of files with names up to NAME_MAX: within 255 bytes, still temp files of this process, distinct per file", () => {
    const names = [`lib${"x".repeat(249)}.so`, `lib${"x".repeat(249)}.sp`, `lib${"é".repeat(124)}x.so`, "libz.so.1"];
    const temps = names.map((n) => basename(tempPathFor(join("/some/dir", n))));
    for (const t of temps) {
      expect(Buffer.byteLength(t), t).toBeLessThanOrEqual(255);
      expect(STALE_TEMP.test(t), t).toBe(true);
      expect(ownerPid(t), t).toBe(process.pid);
      expect(Buffer.from(t, "utf8").toString("utf8"), "cut at a character boundary").toBe(t);
      expect(t.includes("\ufffd")).toBe(false);
    }
    // A short name is kept whole; two long names that differ only at the end get different stems.
    expect(temps[3]!.startsWith(".libz.so.1.elfpatch-")).toBe(true);
    const stem = (t: string): string => t.slice(0, t.indexOf(".elfpatch-"));
    expect(stem(temps[0]!)).not.toBe(stem(temps[1]!));
  });
});
