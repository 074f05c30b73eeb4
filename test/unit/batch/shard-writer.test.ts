/**
 * ShardWriter writes a shard's planned files in groups of at most `heldBytes` of edits, so that a
 * shard of big libraries is not held in memory whole. The grouping must not change what is
 * written: with a limit of one byte (every file its own group, its own undo record in place) the
 * files come out byte-identical to a single group's, in place and as renamed copies; in place,
 * each group's undo record is announced before its files change, and rolling the journal back
 * restores every original.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CoreEngine } from "../../../src/core/engine.js";
import { ShardWriter, type BatchSpec, type FileRecord } from "../../../src/batch/process-file.js";
import { recoverJournal, UndoJournal, type RecordPlace } from "../../../src/batch/journal.js";
import { LibraryProbe } from "../../../src/policy/rpath.js";

const LIBDIR = "/usr/lib/x86_64-linux-gnu";
// Real libraries of different sizes and layouts; a run path this long makes each one grow.
const LIBS = ["libz.so.1", "libm.so.6", "libstdc++.so.6", "libexpat.so.1", "libgcc_s.so.1"];
const LONG = "/opt/elfpatch-shard-writer/a/directory/long/enough/that/every/library/has/to/grow/lib";

describe("ShardWriter's groups of held edits", () => {
  let root: string;
  let originals: Map<string, Buffer>;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "elfpatch-shard-writer-"));
    originals = new Map(LIBS.map((l) => [l, readFileSync(join(LIBDIR, l))]));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** Writes one shard of fresh copies of LIBS with this limit; returns the files' bytes and what was said. */
  async function run(name: string, write: BatchSpec["write"], heldBytes?: number) {
    const dir = join(root, name);
    mkdirSync(dir);
    const files = LIBS.map((l) => {
      copyFileSync(join(LIBDIR, l), join(dir, l));
      return { path: join(dir, l) };
    });
    const spec: BatchSpec = { req: { setRpath: LONG, rpathTag: "rpath" }, ...(write ? { write } : {}) };
    const places: RecordPlace[] = [];
    const journal = new UndoJournal((p) => places.push(p));
    const writer = new ShardWriter(CoreEngine.create(), spec, null, journal, heldBytes);
    let records: FileRecord[] = [];
    await writer.shard(files, new LibraryProbe(), () => {}, (r) => (records = r));
    await writer.finish();
    journal.close();
    const bytes = new Map(LIBS.map((l) => [l, readFileSync(join(dir, l))]));
    return { dir, records, places, journal: journal.path, bytes };
  }

  it("in place: one undo record per group; the bytes do not depend on the grouping; the journal rolls every file back", async () => {
    const whole = await run("in-place-whole", "in-place");
    const single = await run("in-place-single", "in-place", 1);
    for (const r of [...whole.records, ...single.records]) expect(r.status).toBe("patched");
    expect(whole.places).toHaveLength(1);
    expect(single.places).toHaveLength(LIBS.length);
    expect(new Set(single.places.map((p) => p.journal)).size).toBe(1); // one journal, a record per group
    for (const l of LIBS) {
      expect(single.bytes.get(l)!.equals(whole.bytes.get(l)!)).toBe(true);
      expect(single.bytes.get(l)!.equals(originals.get(l)!)).toBe(false);
    }
    expect(recoverJournal(single.journal!).files.sort()).toEqual(LIBS.map((l) => join(single.dir, l)).sort());
    for (const l of LIBS) expect(readFileSync(join(single.dir, l)).equals(originals.get(l)!)).toBe(true);
  });

  it("renamed copies: the same bytes with groups of one file, no temp file left, no journal", async () => {
    const whole = await run("copies-whole", undefined);
    const single = await run("copies-single", undefined, 1);
    const inPlace = await run("in-place-ref", "in-place");
    for (const r of [...whole.records, ...single.records]) expect(r.status).toBe("patched");
    for (const l of LIBS) {
      expect(single.bytes.get(l)!.equals(whole.bytes.get(l)!)).toBe(true);
      expect(single.bytes.get(l)!.equals(inPlace.bytes.get(l)!)).toBe(true);
    }
    expect(single.places).toEqual([]);
    expect(readdirSync(single.dir).sort()).toEqual([...LIBS].sort());
  });
});
