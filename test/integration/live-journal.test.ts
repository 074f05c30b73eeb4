/**
 * Journals and temp files carry the pid of the run that made them. One whose process is still
 * running is not stale: `patch` neither rolls the journal back (that would undo a run in progress:
 * a failed IO_IN_USE record instead) nor removes the temp file, and `recover` refuses too. Once
 * that process is gone, both are handled as usual.
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { UNDO_SUFFIX, writeEditsInPlace } from "../../src/batch/journal.js";
import { ownerPid } from "../../src/batch/temp-names.js";
import { repoRoot } from "../support/fixtures.js";

const CLI = join(repoRoot, "build", "js", "cli", "main.js");
const LIB = "/usr/lib/x86_64-linux-gnu/libz.so.1";

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, ELFPATCH_CACHE_DIR: join(tmpdir(), `elfpatch-live-${process.pid}`) } });
}

/** Renames `name` in `dir` to carry `pid` instead of its own; returns the new name. */
function withPid(dir: string, name: string, pid: number): string {
  const own = ownerPid(name);
  expect(own).not.toBeNull();
  const renamed = name.replace(`.elfpatch-${own}-`, `.elfpatch-${pid}-`);
  renameSync(join(dir, name), join(dir, renamed));
  return renamed;
}

describe("journals and temp files of a running process", () => {
  it("are left alone by patch and recover while it runs, and handled once it is gone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "elfpatch-live-"));
    const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      const lib = join(dir, "libz.so.1");
      copyFileSync(LIB, lib);
      const orig = readFileSync(lib);
      // An in-place run caught mid-shard: the file edited, its journal not yet committed.
      const { journal } = writeEditsInPlace([{ path: lib, edits: [{ offset: 64, bytes: new Uint8Array([1, 2, 3]) }], newSize: orig.length, verify: () => {} }], true);
      expect(journal).not.toBeNull();
      const edited = readFileSync(lib);
      const liveJournal = withPid(dir, journal!.slice(dir.length + 1), sleeper.pid!);
      const liveTemp = `.libz.so.1.elfpatch-${sleeper.pid}-0-1.tmp`;
      writeFileSync(join(dir, liveTemp), "a copy in the making");

      // (The edited file itself is excluded: only the journal and temp file are at stake here.)
      const r = cli(["patch", "--json", "--no-resolve", "--no-progress", "--in-place", "--set-rpath", "/opt/x", "--exclude", "libz.so.1", dir]);
      expect(r.status).toBe(1);
      const recs = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { path?: string; status?: string; error?: { code: string } });
      expect(recs.find((x) => x.path === join(dir, liveJournal))).toMatchObject({ status: "failed", error: { code: "IO_IN_USE" } });
      expect(existsSync(join(dir, liveJournal))).toBe(true);
      expect(existsSync(join(dir, liveTemp))).toBe(true);
      expect(readFileSync(lib).equals(edited)).toBe(true);

      const rec = cli(["recover", dir]);
      expect(rec.status).toBe(1);
      expect(rec.stderr).toContain("IO_IN_USE");
      expect(existsSync(join(dir, liveJournal))).toBe(true);
      expect(existsSync(join(dir, liveTemp))).toBe(true);

      // The process is gone: the journal rolls the file back and the temp file goes.
      sleeper.kill("SIGKILL");
      await new Promise((resolve) => sleeper.once("exit", resolve));
      expect(readFileSync(lib).equals(edited)).toBe(true);
      const gone = cli(["recover", dir]);
      expect(gone.status, gone.stderr).toBe(0);
      expect(gone.stdout).toContain(`${lib}: rolled back to the original`);
      expect(readFileSync(lib).equals(orig)).toBe(true);
      expect(readdirSync(dir).filter((n) => n.endsWith(UNDO_SUFFIX) || n.endsWith(".tmp"))).toEqual([]);
    } finally {
      sleeper.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
