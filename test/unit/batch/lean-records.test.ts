/**
 * `BatchSpec.details: false` (what the CLI's human output asks for): the records of changed files
 * come back without their before/after summaries, so that a batch's memory grows less with its
 * number of files. It must change nothing else: the same bytes on disk, the same records but for
 * those two fields, and an unchanged file's record keeps its summaries (the result cache stores
 * them, and a later `--json` run answered from it prints them). Real Debian libraries, in place and
 * as renamed copies.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runBatch } from "../../../src/batch/run.js";
import type { BatchSpec, FileRecord } from "../../../src/batch/process-file.js";

const LIBDIR = "/usr/lib/x86_64-linux-gnu";
const LIBS = ["libz.so.1", "libm.so.6", "libexpat.so.1", "libgcc_s.so.1"];
const PROFILE = "/nix/var/nix/profiles/default/lib";

describe("records without details", () => {
  let root: string;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "elfpatch-lean-records-"));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** A tree of LIBS, and a copy of libz already carrying the run path (so it stays unchanged). */
  async function tree(name: string): Promise<string> {
    const dir = join(root, name);
    mkdirSync(dir);
    for (const l of LIBS) copyFileSync(join(LIBDIR, l), join(dir, l));
    mkdirSync(join(dir, "done"));
    copyFileSync(join(LIBDIR, "libz.so.1"), join(dir, "done", "libz.so.1"));
    await runBatch([join(dir, "done")], spec("rename", true), { jobs: 1 });
    return dir;
  }

  function spec(write: BatchSpec["write"], details: boolean): BatchSpec {
    return { req: {}, rpath: { add: [PROFILE], force: true }, write, details };
  }

  const rel = (dir: string, records: FileRecord[]): FileRecord[] =>
    records.map((r) => ({ ...r, path: r.path.slice(dir.length) })).sort((a, b) => (a.path < b.path ? -1 : 1));

  for (const write of ["rename", "in-place"] as const) {
    it(`${write}: same bytes and records, less the summaries of changed files`, async () => {
      const full = await tree(`${write}-full`);
      const lean = await tree(`${write}-lean`);
      const a = rel(full, (await runBatch([full], spec(write, true), { jobs: 2 })).records);
      const b = rel(lean, (await runBatch([lean], spec(write, false), { jobs: 2 })).records);
      expect(a.map((r) => [r.path, r.status])).toEqual([
        ["/done/libz.so.1", "unchanged"],
        ...[...LIBS].sort().map((l) => [`/${l}`, "patched"]),
      ]);
      for (let i = 0; i < a.length; i++) {
        const [f, l] = [a[i]!, b[i]!];
        if (f.changed) {
          expect(f.before).toBeDefined();
          expect(f.after?.rpath).toContain(PROFILE);
          expect("before" in l || "after" in l).toBe(false);
          const { before: _b, after: _a, ...rest } = f;
          expect(l).toEqual(rest);
        } else {
          expect(l.before?.rpath).toContain(PROFILE);
          expect(l).toEqual(f);
        }
        expect(readFileSync(join(lean, l.path)).equals(readFileSync(join(full, f.path)))).toBe(true);
      }
    });
  }
});
