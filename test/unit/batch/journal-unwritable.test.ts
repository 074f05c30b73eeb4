/**
 * `--in-place` writes its undo journal next to the files it edits, before any byte changes. A
 * group whose first file lies in a directory that refuses new entries gets its journal in the
 * directory of another file of the group; when no directory of the group takes it, every file of
 * the group fails with IO_WRITE (nothing edited, no journal left) and the next group is tried
 * afresh. (Before: the error escaped as an internal error and stopped the batch.)
 */
import { copyFileSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { commitJournals, recoverJournal, UndoJournal, UNDO_SUFFIX, writeEditsInPlace } from "../../../src/batch/journal.js";
import { item, LIB, ORIG } from "../../support/undo-items.js";
import { lockedTree, type LockedTree } from "../../support/lock.js";

describe("undo journals and directories that refuse new entries", () => {
  let tree: LockedTree | null = null;
  let locked: string;
  let open: string;
  beforeEach((ctx) => {
    tree = lockedTree("elfpatch-jlock-", (lockedDir, openDir) => {
      for (const n of ["a.so", "b.so"]) copyFileSync(LIB, join(lockedDir, n));
      copyFileSync(LIB, join(openDir, "c.so"));
    });
    if (tree === null) return ctx.skip();
    ({ locked, open } = tree);
  });
  afterEach(() => {
    tree?.dispose();
    tree = null;
  });

  const original = (f: string): boolean => readFileSync(f).equals(ORIG);
  const journalsIn = (d: string): string[] => readdirSync(d).filter((n) => n.endsWith(UNDO_SUFFIX));

  it("no directory of the group takes the journal: each file fails, untouched; the next group still works", () => {
    const j = new UndoJournal();
    const files = [join(locked, "a.so"), join(locked, "b.so")];
    const r = writeEditsInPlace(files.map((f, i) => item(f, i + 1)), true, undefined, j);
    expect(r.journal).toBeNull();
    for (const e of r.errors) {
      expect(e?.code).toBe("IO_WRITE");
      expect(e?.message).toContain(`Cannot create the undo journal in ${locked}`);
      expect(e?.message).toContain("the file was not changed");
    }
    for (const f of files) expect(original(f)).toBe(true);
    expect(j.path).toBeNull();
    // The thread's next group, in a writable directory, gets the journal.
    const c = join(open, "c.so");
    const ok = writeEditsInPlace([item(c, 7)], true, undefined, j);
    expect(ok.errors).toEqual([null]);
    expect(ok.journal).toBe(j.path);
    expect(j.dir).toBe(open);
    j.close();
    expect(original(c)).toBe(false);
    commitJournals([ok.journal!], [c]);
    expect(journalsIn(open)).toEqual([]);
  });

  it("the first file's directory refuses: the journal goes next to another file of the group, and rolls back both", () => {
    const a = join(locked, "a.so");
    const c = join(open, "c.so");
    const j = new UndoJournal();
    const r = writeEditsInPlace([item(a, 1), item(c, 2)], true, undefined, j);
    expect(r.errors).toEqual([null, null]);
    expect(j.dir).toBe(open);
    j.close();
    expect(original(a) || original(c)).toBe(false);
    // What a run killed now would leave: the next run finds the journal and undoes both.
    const back = recoverJournal(r.journal!);
    expect(back.files.sort()).toEqual([a, c].sort());
    expect(original(a) && original(c)).toBe(true);
    expect(journalsIn(open)).toEqual([]);
  });

  it("a journal of its own (no thread journal) that cannot be made leaves nothing behind", () => {
    const a = join(locked, "a.so");
    const r = writeEditsInPlace([item(a, 3)], false);
    expect(r.errors[0]?.code).toBe("IO_WRITE");
    expect(r.journal).toBeNull();
    expect(original(a)).toBe(true);
    expect(journalsIn(locked)).toEqual([]);
  });
});
