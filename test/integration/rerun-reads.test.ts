/**
 * What a re-run that changes nothing asks of the kernel per file, observed with `strace -f`: every
 * file is opened once, never `fstat`ed (the scan's `lstat` stands for a file that needs no edit),
 * and read in one `pread` when it is at most 64 KiB, else in two when its dynamic array lies in its
 * last 64 KiB (the first 16 KiB, then the tail: the dynamic array, and the string table the first
 * run moved to the end); the symbol version tables, which a check reads no name of, are not read.
 * On the bench tree's uncached re-run these took the reads from 7,010 to 5,109 and the stats of
 * its files from 6,608 to 3,447 (0.05 s of a 0.56 s run). The first run, which edits, is traced
 * too: it must show the `fstat`s and reads this test counts, so that a parse of the trace that
 * finds nothing cannot pass.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";

const HOST = "/usr/lib/x86_64-linux-gnu";
/** Small and large libraries (those this machine has). */
const LIBS = [
  "libz.so.1", "libdl.so.2", "libutil.so.1", "libresolv.so.2", "libm.so.6", "libstdc++.so.6", "libgcrypt.so.20", "libsystemd.so.0",
  "libcrypto.so.3", "libsqlite3.so.0", "libattr.so.1", "libacl.so.1", "libcap.so.2", "libuuid.so.1", "libffi.so.8",
].filter((l) => existsSync(join(HOST, l)));
const CLI = join(repoRoot, "build", "js", "cli", "main.js");
const KiB = 1024;
const hasStrace = spawnSync("strace", ["-f", "-qq", "-e", "trace=none", "true"], { stdio: "ignore" }).status === 0;

interface PerFile {
  opens: number;
  preads: number;
  fstats: number;
}

/**
 * Per file of `tree`: opens, `pread`s and stats of an open descriptor, from an `strace -f` log
 * (a call split by another thread's, `<unfinished ...>` then `<... resumed>`, is joined first).
 */
function perFile(log: string, tree: string): Map<string, PerFile> {
  const pending = new Map<string, string>();
  const fds = new Map<string, string>(); // fd -> path (descriptors are the process's, shared by its threads)
  const out = new Map<string, PerFile>();
  const of = (p: string): PerFile => {
    let e = out.get(p);
    if (e === undefined) out.set(p, (e = { opens: 0, preads: 0, fstats: 0 }));
    return e;
  };
  for (const raw of log.split("\n")) {
    const m = /^(\d+)\s+(.*)$/.exec(raw);
    if (!m) continue;
    const [, pid, rest] = m as unknown as [string, string, string];
    if (rest.endsWith("<unfinished ...>")) {
      pending.set(pid, rest.slice(0, -"<unfinished ...>".length));
      // A descriptor is free from the start of its close: another thread's open may get it first.
      const closing = /^close\((\d+)/.exec(rest);
      if (closing) fds.delete(closing[1]!);
      continue;
    }
    let line = rest;
    const resumed = /^<\.\.\. \w+ resumed>(.*)$/.exec(rest);
    if (resumed) {
      line = (pending.get(pid) ?? "") + resumed[1];
      pending.delete(pid);
    }
    let c: RegExpExecArray | null;
    if ((c = /^openat\(AT_FDCWD, "([^"]+)", [^)]*\)\s+= (\d+)$/.exec(line))) {
      if (c[1]!.startsWith(tree + "/")) {
        fds.set(c[2]!, c[1]!);
        of(c[1]!).opens++;
      } else fds.delete(c[2]!);
    } else if ((c = /^pread64\((\d+),/.exec(line))) {
      const p = fds.get(c[1]!);
      if (p !== undefined) of(p).preads++;
    } else if ((c = /^(?:statx|newfstatat)\((\d+), "",/.exec(line) ?? /^fstat\((\d+),/.exec(line))) {
      const p = fds.get(c[1]!);
      if (p !== undefined) of(p).fstats++;
    } else if ((c = /^close\((\d+)\)/.exec(line))) fds.delete(c[1]!);
  }
  return out;
}

/** The file offset of PT_DYNAMIC (readelf). */
function dynamicOffset(file: string): number {
  const text = execFileSync("readelf", ["-lW", file], { encoding: "utf8" });
  const m = /^\s*DYNAMIC\s+(0x[0-9a-f]+)/m.exec(text);
  if (!m) throw new Error(`no PT_DYNAMIC in ${file}`);
  return Number(m[1]);
}

describe.skipIf(!hasStrace || LIBS.length < 5)("the re-run's system calls per file", () => {
  const dir = mkdtempSync(join(tmpdir(), "elfpatch-rerun-reads-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // -j2 on a tree of 256 files more (the batch starts its worker before the scan from EAGER_FILES files on).
  for (const jobs of ["1", "2"]) {
    it(`-j${jobs}: one open, no fstat, one read up to 64 KiB, two with the dynamic array in the last 64 KiB`, () => {
      const tree = join(dir, `j${jobs}`);
      mkdirSync(join(tree, "lib"), { recursive: true });
      for (const l of LIBS) copyFileSync(join(HOST, l), join(tree, "lib", l));
      const files = LIBS.map((l) => join(tree, "lib", l));
      if (jobs === "2") {
        const small = LIBS.filter((l) => statSync(join(HOST, l)).size <= 256 * KiB).slice(0, 4);
        for (let i = 0; files.length < LIBS.length + 256; i++) {
          mkdirSync(join(tree, `m${i}`));
          for (const l of small) {
            copyFileSync(join(HOST, l), join(tree, `m${i}`, l));
            files.push(join(tree, `m${i}`, l));
          }
        }
      }
      const recipe = [`-j${jobs}`, "--force-rpath", "--add-rpath", HOST, "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${HOST}`, tree];
      const traced = (): Map<string, PerFile> => {
        const log = join(dir, "strace.log");
        const r = spawnSync("strace", [
          "-f", "-qq", "-s", "4096", "-e", "trace=openat,pread64,statx,newfstatat,fstat,close", "-o", log,
          process.execPath, CLI, "patch", "--no-progress", "--no-cache", ...recipe,
        ], { encoding: "utf8" });
        expect(r.status, r.stderr).toBe(0);
        return perFile(readFileSync(log, "utf8"), tree);
      };
      const first = traced();
      const again = traced();
      const tail = new Map<string, number>(); // per original library: bytes from the dynamic array to the end
      for (const f of files) {
        const l = f.slice(tree.length + 1);
        const size = statSync(f).size;
        // The first run edited every file: it stats it before writing, and reads it.
        expect(first.get(f)?.fstats, `${l}: first run`).toBeGreaterThan(0);
        expect(first.get(f)?.preads, `${l}: first run`).toBeGreaterThan(0);
        const seen = again.get(f);
        expect(seen, l).toBeDefined();
        expect(seen!.opens, `${l}: opens`).toBe(1);
        expect(seen!.fstats, `${l}: fstats`).toBe(0);
        const base = f.slice(f.lastIndexOf("/") + 1);
        if (!tail.has(base)) tail.set(base, size - dynamicOffset(f)); // (copies of a library are alike)
        const t = tail.get(base)!;
        const most = size <= 64 * KiB ? 1 : t <= 64 * KiB ? 2 : 3;
        expect(seen!.preads, `${l} (${size} bytes, dynamic array ${t} bytes before the end): preads`).toBeLessThanOrEqual(most);
        expect(seen!.preads).toBeGreaterThan(0);
      }
      // (With -j2 the worker started before the scan may claim files too, if it is ready before
      // the main thread has taken them all; its calls are counted like the main thread's. That
      // the worker plans from the scan's stat is pool.test.ts's.)
      // Among them the cases this counts: a library of 16-64 KiB (read whole), and a larger one
      // whose dynamic array lies in its last 64 KiB after the first run (prefix, then tail).
      const sizes = LIBS.map((l) => statSync(join(tree, "lib", l)).size);
      expect(sizes.some((n) => n > 16 * KiB && n <= 64 * KiB)).toBe(true);
      expect([...tail].some(([base, t]) => t <= 64 * KiB && statSync(join(tree, "lib", base)).size > 64 * KiB)).toBe(true);
    });
  }
});
