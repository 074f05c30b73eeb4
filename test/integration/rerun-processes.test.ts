/**
 * A re-run that changes nothing starts no process: no background `sync -f` helper (in place, the
 * main thread asked for one after every shard, edited or not: 55 ms of a 0.6 s re-run of the bench
 * tree on a VM where process starts are dear), and no `ld.so --help` for a tree without hwcaps
 * subdirectories (resolve/hwcaps.ts). Observed with `strace -f -e trace=execve`; the first run,
 * which edits, may start its syncs.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";

const HOST = "/usr/lib/x86_64-linux-gnu";
const LIBS = ["libz.so.1", "libdl.so.2", "libutil.so.1", "libm.so.6", "libresolv.so.2"];
const CLI = join(repoRoot, "build", "js", "cli", "main.js");
/** strace is there and may trace (a container can forbid ptrace). */
const hasStrace = spawnSync("strace", ["-f", "-qq", "-e", "trace=none", "true"], { stdio: "ignore" }).status === 0;

describe.skipIf(!hasStrace || !existsSync(join(HOST, LIBS[0]!)))("a re-run that changes nothing", () => {
  const dir = mkdtempSync(join(tmpdir(), "elfpatch-rerun-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** The programs the run executed (its own node aside), and its summary. */
  function traced(args: string[]): { execs: string[]; summary: { patched: number; unchanged: number } } {
    const log = join(dir, "strace.log");
    const r = spawnSync("strace", ["-f", "-qq", "-e", "trace=execve", "-o", log, process.execPath, CLI, "patch", "--json", "--no-cache", ...args], {
      encoding: "utf8",
    });
    expect(r.status, r.stderr).toBe(0);
    const execs = readFileSync(log, "utf8").split("\n")
      .map((l) => /execve\("([^"]+)"/.exec(l)?.[1])
      .filter((p): p is string => p !== undefined && p !== process.execPath);
    const summary = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { patched: number; unchanged: number };
    return { execs, summary };
  }

  for (const mode of [["--in-place"], []]) {
    it(`${mode.join(" ") || "default mode"}: the first run edits (and may sync), the re-run starts no process`, () => {
      const tree = join(dir, mode.length ? "in-place" : "default");
      spawnSync("mkdir", ["-p", join(tree, "lib")]);
      for (const l of LIBS) copyFileSync(join(HOST, l), join(tree, "lib", l));
      // The seed recipe, on one thread (the main thread's shards are the ones that asked for syncs).
      const recipe = ["-j1", ...mode, "--force-rpath", "--add-rpath", HOST, "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${HOST}`, tree];
      const first = traced(recipe);
      expect(first.summary.patched).toBe(LIBS.length);
      const again = traced(recipe);
      expect(again.summary).toMatchObject({ patched: 0, unchanged: LIBS.length });
      expect(again.execs).toEqual([]);
    });
  }
});
