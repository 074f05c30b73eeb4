/**
 * Undo journals (src/batch/journal.ts): a batch thread appends one record per shard to one
 * journal. Recovery rolls back the files of every complete record and ignores a torn last one
 * (being written: none of its files was touched yet); a dead worker's last record is undone alone
 * and cut off, its earlier records kept for the commit; a file another writer changed after it was
 * planned stays out of the record (so no recovery writes over that writer's bytes); journals of
 * the earlier JSON format are still rolled back.
 */
import { createHash } from "node:crypto";
import { appendFileSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { recoverJournal, undoRecord, UndoJournal, UNDO_SUFFIX, writeEditsInPlace, type RecordPlace } from "../../../src/batch/journal.js";
import { item, LIB, ORIG } from "../../support/undo-items.js";

describe("undo journals", () => {
  let dir: string;
  let files: string[];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-journal-"));
    files = Array.from({ length: 6 }, (_, i) => join(dir, `lib${i}.so`));
    for (const f of files) copyFileSync(LIB, f);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const original = (f: string): boolean => readFileSync(f).equals(ORIG);
  const journals = (): string[] => readdirSync(dir).filter((n) => n.endsWith(UNDO_SUFFIX));

  it("one journal per thread, a record per shard; recovery rolls every complete record back", () => {
    const places: RecordPlace[] = [];
    const j = new UndoJournal((p) => places.push(p));
    for (const shard of [[0, 1], [2, 3], [4, 5]]) {
      const r = writeEditsInPlace(shard.map((i) => item(files[i]!, i)), true, undefined, j);
      expect(r.errors).toEqual([null, null]);
      expect(r.journal).toBe(j.path);
    }
    j.close();
    expect(journals()).toHaveLength(1);
    expect(new Set(places.map((p) => p.journal)).size).toBe(1);
    expect(places.map((p) => p.at)).toEqual([...places.map((p) => p.at)].sort((a, b) => a - b));
    for (const f of files) expect(original(f)).toBe(false);
    const r = recoverJournal(j.path!);
    expect(r.outcome).toBe("rolled-back");
    expect(r.files.sort()).toEqual([...files].sort());
    for (const f of files) expect(original(f)).toBe(true);
    expect(journals()).toEqual([]);
  });

  it("a torn last record (the run stopped while writing it) is ignored: its files were not touched", () => {
    const j = new UndoJournal();
    writeEditsInPlace([item(files[0]!, 1)], true, undefined, j);
    writeEditsInPlace([item(files[1]!, 2)], true, undefined, j);
    j.close();
    // The third record, as far as it got: its length and half its body.
    const size = statSync(j.path!).size;
    const body = Buffer.alloc(64, 7);
    const head = Buffer.alloc(4);
    head.writeUInt32LE(body.length + 100, 0);
    appendFileSync(j.path!, Buffer.concat([head, body]));
    const r = recoverJournal(j.path!);
    expect(r.files.sort()).toEqual([files[0], files[1]].sort());
    expect(original(files[0]!) && original(files[1]!)).toBe(true);
    // A corrupt record (its checksum fails) ends the records the same way.
    const k = new UndoJournal();
    writeEditsInPlace([item(files[2]!, 3)], true, undefined, k);
    writeEditsInPlace([item(files[3]!, 4)], true, undefined, k);
    k.close();
    const raw = readFileSync(k.path!);
    raw[raw.length - 40] ^= 0xff; // inside the second record's body
    writeFileSync(k.path!, raw);
    expect(recoverJournal(k.path!).files).toEqual([files[2]]);
    expect(original(files[2]!)).toBe(true);
    expect(original(files[3]!)).toBe(false); // its record is gone: left edited (the case cannot arise: a record is durable before its files change)
    expect(size).toBeGreaterThan(16);
  });

  it("a dead worker's last record is undone alone and cut off; the earlier ones stay for the commit", () => {
    const places: RecordPlace[] = [];
    const j = new UndoJournal((p) => places.push(p));
    writeEditsInPlace([item(files[0]!, 1), item(files[1]!, 2)], true, undefined, j);
    writeEditsInPlace([item(files[2]!, 3)], true, undefined, j);
    const cut = places[1]!;
    expect(undoRecord(cut.journal, cut.at)).toEqual([files[2]]);
    expect(original(files[2]!)).toBe(true);
    expect(original(files[0]!) || original(files[1]!)).toBe(false);
    expect(statSync(cut.journal).size).toBe(cut.at);
    // The rest rolls back as usual; a journal cut at its first record is removed.
    expect(recoverJournal(cut.journal).files.sort()).toEqual([files[0], files[1]].sort());
    const k = new UndoJournal((p) => places.push(p));
    writeEditsInPlace([item(files[3]!, 4)], true, undefined, k);
    undoRecord(k.path!, places[2]!.at);
    expect(existsSync(k.path!)).toBe(false);
    expect(original(files[3]!)).toBe(true);
    j.close();
    k.close();
  });

  it("a file changed by another writer after it was planned stays out of the record", () => {
    const j = new UndoJournal();
    const items = [item(files[0]!, 1), item(files[1]!, 2)];
    truncateSync(files[1]!, 1000); // the other writer
    const theirs = readFileSync(files[1]!);
    const r = writeEditsInPlace(items, true, undefined, j);
    expect(r.errors[0]).toBeNull();
    expect(r.errors[1]?.code).toBe("IO_CHANGED");
    j.close();
    // A crash now: recovery rolls back what was edited, and leaves the other writer's bytes alone.
    expect(recoverJournal(j.path!).files).toEqual([files[0]]);
    expect(original(files[0]!)).toBe(true);
    expect(readFileSync(files[1]!).equals(theirs)).toBe(true);
  });

  it("a journal under which nothing was edited is removed when closed", () => {
    const j = new UndoJournal();
    const it0 = item(files[0]!, 1);
    truncateSync(files[0]!, 10); // changed after it was planned: not edited
    expect(writeEditsInPlace([it0], true, undefined, j).journal).toBeNull();
    j.close();
    expect(journals()).toEqual([]);
  });

  it("journals of format 2 (JSON) are still rolled back", () => {
    const f = files[0]!;
    writeFileSync(f, Buffer.concat([ORIG, Buffer.alloc(50)]));
    const body = JSON.stringify({ version: 2, files: [{ file: "lib0.so", size: ORIG.length, blocks: [] }] });
    const journal = join(dir, `.elfpatch-999999-0-1${UNDO_SUFFIX}`);
    writeFileSync(journal, `${createHash("sha256").update(body).digest("hex")}\n${body}`);
    expect(recoverJournal(journal).files).toEqual([f]);
    expect(original(f)).toBe(true);
  });
});
