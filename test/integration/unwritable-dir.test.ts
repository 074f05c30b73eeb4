/**
 * A directory that refuses new entries (not writable to the user, or immutable) while its files
 * are writable: the default mode cannot make its temp copy there, `--in-place` cannot make its
 * undo journal there. Either way that file fails with IO_WRITE and a message that says which
 * directory and why, is left byte for byte as it was, nothing of ours is left behind, and the rest
 * of the batch is patched (exit 1, not an internal error that stops the batch). And a file that
 * cannot be opened for writing under `--in-place` (read-only to the user, or immutable), or an
 * immutable original the default mode cannot replace, says why.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";
import { lockedTree, lockFile, type LockedTree } from "../support/lock.js";
import { dynStrings, readelfDynamic } from "../support/oracle.js";

const CLI = join(repoRoot, "build", "js", "cli", "main.js");
const HOST = "/usr/lib/x86_64-linux-gnu";
const RPATH = "/opt/elfpatch-test/lib";

interface Rec {
  type: string;
  path: string;
  status: string;
  error?: { code: string; message: string };
}

describe("a directory that refuses new files", () => {
  let tree: LockedTree | null = null;
  let dir: string;
  let locked: string;
  const lockedLibs = ["libz.so.1", "libutil.so.1"];
  beforeEach((ctx) => {
    tree = lockedTree("elfpatch-unwritable-", (lockedDir, open) => {
      for (const l of lockedLibs) copyFileSync(join(HOST, l), join(lockedDir, l));
      copyFileSync(join(HOST, "libdl.so.2"), join(open, "libdl.so.2"));
    });
    if (tree === null) return ctx.skip();
    ({ dir, locked } = tree);
  });
  afterEach(() => {
    tree?.dispose();
    tree = null;
  });

  for (const mode of [[], ["--in-place"]]) {
    it(`${mode.length ? "--in-place" : "default mode"}: those files fail with the reason, untouched; the others are patched`, () => {
      const before = lockedLibs.map((l) => readFileSync(join(locked, l)));
      // -j1: one thread, so the locked files' group is theirs alone (no other directory to use).
      const r = spawnSync(process.execPath, [CLI, "patch", "--set-rpath", RPATH, "--json", "--no-cache", "-j1", ...mode, dir], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(1);
      const records = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Rec);
      const files = records.filter((x) => x.type === "file");
      const failed = files.filter((x) => x.status === "failed");
      expect(failed.map((x) => x.path).sort()).toEqual(lockedLibs.map((l) => join(locked, l)).sort());
      for (const f of failed) {
        expect(f.error!.code).toBe("IO_WRITE");
        expect(f.error!.message).toContain(locked);
        expect(f.error!.message).toContain("must be writable");
        expect(f.error!.message).toContain(mode.length ? "undo journal" : "--in-place");
      }
      lockedLibs.forEach((l, i) => expect(readFileSync(join(locked, l)).equals(before[i]!)).toBe(true));
      expect(files.find((x) => x.path.endsWith("libdl.so.2"))?.status).toBe("patched");
      expect(dynStrings(readelfDynamic(join(dir, "open", "libdl.so.2")), "RUNPATH")).toEqual([RPATH]);
      const summary = records.at(-1) as unknown as { type: string; failed: number; patched: number };
      expect(summary).toMatchObject({ type: "summary", failed: 2, patched: 1 });
      for (const d of [locked, join(dir, "open")]) expect(readdirSync(d).filter((n) => n.includes(".elfpatch-"))).toEqual([]);
    });
  }

  it("--in-place: a file that cannot be opened for writing says why, and stays as it was", (ctx) => {
    const file = join(dir, "open", "libdl.so.2");
    const before = readFileSync(file);
    const unlockFile = lockFile(file);
    if (unlockFile === null) return ctx.skip(); // (no way to lock a file here)
    try {
      const r = spawnSync(process.execPath, [CLI, "patch", "--set-rpath", RPATH, "--json", "--no-cache", "-j1", "--in-place", join(dir, "open")], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(1);
      const rec = JSON.parse(r.stdout.trim().split("\n")[0]!) as Rec;
      expect(rec).toMatchObject({ path: file, status: "failed", error: { code: "IO_OPEN" } });
      expect(rec.error!.message).toMatch(/^Cannot open the file for writing: (EACCES|EPERM): --in-place edits the file itself/);
      expect(rec.error!.message).toContain("the file was not changed");
    } finally {
      unlockFile();
    }
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(readdirSync(join(dir, "open")).filter((n) => n.includes(".elfpatch-"))).toEqual([]);
  });

  it("default mode: an immutable file (root only: chattr +i) cannot be replaced; it says why, and no temp file stays", (ctx) => {
    if (process.getuid?.() !== 0) return ctx.skip(); // (a user's chmod does not stop a rename)
    const file = join(dir, "open", "libdl.so.2");
    const before = readFileSync(file);
    const unlockFile = lockFile(file);
    if (unlockFile === null) return ctx.skip();
    try {
      const r = spawnSync(process.execPath, [CLI, "patch", "--set-rpath", RPATH, "--json", "--no-cache", "-j1", join(dir, "open")], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(1);
      const rec = JSON.parse(r.stdout.trim().split("\n")[0]!) as Rec;
      expect(rec).toMatchObject({ path: file, status: "failed", error: { code: "IO_WRITE" } });
      expect(rec.error!.message).toMatch(/^Cannot replace the file with its new version: EPERM: the file is immutable/);
    } finally {
      unlockFile();
    }
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(readdirSync(join(dir, "open")).filter((n) => n.includes(".elfpatch-"))).toEqual([]);
  });
});
