/**
 * Edits are applied only to the bytes they were planned on: a file whose size or ctime changed
 * between planning and writing gets a failed record (IO_CHANGED) and is left exactly as the other
 * writer left it, in both write modes; no journal or temp file stays behind. Also: the in-place
 * journal takes the original bytes the core kept, and rolling it back restores the file. Renamed
 * copies are written as a group (all copies, one sync, then the renames): a file changed after its
 * copy was made is not replaced either, and the group works without `sync -f` too.
 */
import { appendFileSync, chmodSync, copyFileSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bufferSource, CoreEngine } from "../../../src/core/engine.js";
import { planOne, writePlanned, type BatchSpec, type ScannedStat } from "../../../src/batch/process-file.js";
import { recoverJournal, writeEditsInPlace } from "../../../src/batch/journal.js";
import { LibraryProbe } from "../../../src/policy/rpath.js";
import { syncFileSystems } from "../../../src/io/safe-write.js";

const LIB = "/usr/lib/x86_64-linux-gnu/libz.so.1";
const LONG = "/opt/elfpatch-changed-after-plan/a/directory/long/enough/that/the/file/has/to/grow/lib";

describe("a file that changes after it was planned", () => {
  for (const write of ["rename", "in-place"] as const) {
    for (const change of ["chmod", "append"] as const) {
      it(`${write}: ${change} between plan and write gives IO_CHANGED and nothing written`, () => {
        const dir = mkdtempSync(join(tmpdir(), "elfpatch-changed-"));
        try {
          const f = join(dir, "libz.so.1");
          copyFileSync(LIB, f);
          const spec: BatchSpec = { req: { setRpath: LONG, rpathTag: "rpath" }, write };
          const engine = CoreEngine.create();
          const p = planOne(engine, f, spec, new LibraryProbe());
          expect(p.plan?.edits.length).toBeGreaterThan(0);
          // Past the file system's timestamp tick, so the change gets a new ctime.
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
          if (change === "chmod") chmodSync(f, 0o600);
          else appendFileSync(f, "x");
          const other = readFileSync(f);
          writePlanned(engine, [p], spec, false, false);
          expect(p.rec.status).toBe("failed");
          expect(p.rec.error?.code).toBe("IO_CHANGED");
          expect(readFileSync(f).equals(other)).toBe(true);
          expect(readdirSync(dir)).toEqual(["libz.so.1"]);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });
    }
  }

  /** Plans `n` copies of libz in a fresh dir; returns them with the engine. */
  function group(n: number) {
    const dir = mkdtempSync(join(tmpdir(), "elfpatch-group-"));
    const files = Array.from({ length: n }, (_, i) => join(dir, `libz${i}.so.1`));
    for (const f of files) copyFileSync(LIB, f);
    const spec: BatchSpec = { req: { setRpath: LONG, rpathTag: "rpath" } };
    const engine = CoreEngine.create();
    const planned = files.map((f) => planOne(engine, f, spec, new LibraryProbe()));
    for (const p of planned) expect(p.plan?.edits.length).toBeGreaterThan(0);
    return { dir, files, spec, engine, planned };
  }

  it("rename group: a file changed after its copy was made is not replaced; the others are", () => {
    const { dir, files, spec, engine, planned } = group(10);
    try {
      // Copies whose plan the core could not parse beforehand are parsed once written, one after
      // the other before any rename (the path a plan needing unloaded bytes takes): while the
      // last one is, another writer appends to the first file, whose copy is already made.
      for (const p of planned) delete p.plan!.after;
      const inspect = engine.inspect.bind(engine);
      engine.inspect = (src, path) => {
        if (path === files[9]) {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
          appendFileSync(files[0]!, "x");
        }
        return inspect(src, path);
      };
      const other = Buffer.concat([readFileSync(files[0]!), Buffer.from("x")]);
      writePlanned(engine, planned, spec, false, false);
      expect(planned[0]!.rec.status).toBe("failed");
      expect(planned[0]!.rec.error?.code).toBe("IO_CHANGED");
      expect(readFileSync(files[0]!).equals(other)).toBe(true); // the other writer's version
      for (const p of planned.slice(1)) {
        expect(p.rec.status).toBe("patched");
        expect(statSync(p.rec.path).size).toBe(p.plan!.newSize);
        expect(p.rec.after?.rpath).toBe(LONG);
      }
      expect(readdirSync(dir).sort()).toEqual(files.map((f) => f.slice(dir.length + 1)).sort());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rename group: without `sync` on PATH the group takes the fsync-per-copy path, and all are written", () => {
    const { dir, files, spec, engine, planned } = group(9);
    const path = process.env["PATH"];
    try {
      process.env["PATH"] = dir; // no `sync` here
      expect(syncFileSystems([dir])).toBe(false); // so the fallback is what runs below
      writePlanned(engine, planned, spec, false, false);
      for (const p of planned) expect(p.rec.status).toBe("patched");
      const again = files.map((f) => planOne(engine, f, spec, new LibraryProbe()));
      for (const p of again) expect(p.rec.status).toBe("unchanged");
      expect(readdirSync(dir).length).toBe(files.length);
    } finally {
      process.env["PATH"] = path;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("in place, the journal holds the original bytes of every changed byte, from the core", () => {
    const dir = mkdtempSync(join(tmpdir(), "elfpatch-changed-"));
    try {
      const f = join(dir, "libz.so.1");
      copyFileSync(LIB, f);
      const orig = readFileSync(f);
      const engine = CoreEngine.create();
      const p = planOne(engine, f, { req: { setRpath: LONG, rpathTag: "rpath" } }, new LibraryProbe());
      const plan = p.plan!;
      // The undo runs hold the original bytes, and cover every byte the edits change inside the
      // original file (a write may span unchanged bytes; those need no undo).
      const covered = new Uint8Array(orig.length);
      for (const u of plan.undo) {
        expect(Buffer.from(u.data).equals(orig.subarray(u.offset, u.offset + u.data.length))).toBe(true);
        covered.fill(1, u.offset, u.offset + u.data.length);
      }
      let changed = 0;
      for (const e of plan.edits) {
        for (let i = 0; i < e.bytes.length && e.offset + i < orig.length; i++) {
          if (e.bytes[i] !== orig[e.offset + i]) {
            changed++;
            expect(covered[e.offset + i], `byte ${e.offset + i}`).toBe(1);
          }
        }
      }
      expect(changed).toBeGreaterThan(0);
      const { errors, journal } = writeEditsInPlace(
        [{ path: f, edits: plan.edits, newSize: plan.newSize, size: plan.before.size, undo: plan.undo }],
        true,
      );
      expect(errors).toEqual([null]);
      expect(readFileSync(f).equals(orig)).toBe(false);
      recoverJournal(journal!);
      expect(readFileSync(f).equals(orig)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The batch plans a file from what its scan's `lstat` saw (no `fstat` of its own) while the file
 * needs no edit; a file that needs edits is `fstat`ed before anything is written and planned again
 * from its current bytes if it changed since the scan. Without that, the edits of a file replaced
 * or appended to after the scan would be planned on the scan's size and fail (or worse).
 */
describe("a file that changes between the scan and its plan", () => {
  const HOST = "/usr/lib/x86_64-linux-gnu";
  const wait = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const scannedOf = (f: string): ScannedStat => {
    const st = statSync(f);
    return { size: st.size, dev: st.dev, ino: st.ino, nlink: st.nlink, ctimeMs: st.ctimeMs };
  };
  const spec: BatchSpec = { req: { setRpath: LONG, rpathTag: "rpath" } };
  /** Runs `fn` on a copy of libz (as `name`) in a fresh directory, removed afterwards. */
  const withCopy = (name: string, fn: (f: string, dir: string) => void): void => {
    const dir = mkdtempSync(join(tmpdir(), "elfpatch-scanned-"));
    try {
      const f = join(dir, name);
      copyFileSync(LIB, f);
      fn(f, dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  for (const [how, other] of [["a smaller library", "libdl.so.2"], ["a larger library", "libm.so.6"]] as const) {
    it(`replaced by ${how} after the scan: planned and written as it is now`, () => {
      withCopy("lib.so", (f, dir) => {
        const scanned = scannedOf(f);
        wait(30); // past the timestamp tick
        copyFileSync(join(HOST, other), join(dir, "new"));
        renameSync(join(dir, "new"), f);
        const engine = CoreEngine.create();
        const p = planOne(engine, f, spec, new LibraryProbe(), false, [], scanned);
        expect(p.rec.error).toBeUndefined();
        expect(p.plan!.before.size).toBe(statSync(f).size);
        expect(p.ctimeMs).toBe(statSync(f).ctimeMs);
        const soname = engine.inspect(bufferSource(readFileSync(join(HOST, other))), other).soname;
        expect(p.rec.before?.soname).toBe(soname);
        writePlanned(engine, [p], spec, false, false);
        expect(p.rec.status).toBe("patched");
        const after = engine.inspect(bufferSource(readFileSync(f)), f);
        expect(after).toMatchObject({ soname, rpath: LONG });
      });
    });
  }

  it("appended to after the scan (same inode, larger): the edits keep the appended bytes", () => {
    withCopy("libz.so.1", (f) => {
      const scanned = scannedOf(f);
      wait(30);
      appendFileSync(f, "trailing bytes another writer added");
      const engine = CoreEngine.create();
      const p = planOne(engine, f, spec, new LibraryProbe(), false, [], scanned);
      expect(p.plan!.before.size).toBe(scanned.size + 35);
      writePlanned(engine, [p], spec, false, false);
      expect(p.rec.status).toBe("patched");
      expect(engine.inspect(bufferSource(readFileSync(f)), f).rpath).toBe(LONG);
      expect(readFileSync(f).includes("trailing bytes another writer added")).toBe(true);
    });
  });

  it("unchanged since the scan: the plan and its record equal those made without the scan's stat", () => {
    withCopy("libz.so.1", (f) => {
      const engine = CoreEngine.create();
      for (const req of [spec.req, {}]) {
        const s: BatchSpec = { req };
        const fresh = planOne(engine, f, s, new LibraryProbe());
        const trusted = planOne(engine, f, s, new LibraryProbe(), false, [], scannedOf(f));
        expect(trusted.rec).toEqual(fresh.rec);
        expect(trusted.ctimeMs).toBe(fresh.ctimeMs);
        expect(trusted.plan?.edits ?? null).toEqual(fresh.plan?.edits ?? null);
      }
    });
  });
});
