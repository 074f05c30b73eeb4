/**
 * The result cache of `elfpatch patch` (src/batch/cache.ts), through the built CLI
 * (build/js/cli/main.js) on trees of real ELF files:
 *
 *   tree/lib/<system libraries>   copies of a few libraries of /usr/lib/x86_64-linux-gnu
 *   tree/bin/tool                 fixture prog_pie (RUNPATH $ORIGIN/deps, NEEDED libdep.so)
 *   tree/obj/helper.o             a relocatable object built with gcc -c (no dynamic section: unchanged
 *                                 when the run path shrinks to nothing, else skipped, no-dynamic)
 *   tree/README.txt, tree/empty   not ELF
 *   profile/lib/<name>            symlinks to system libraries: what --shrink-rpath probes
 *
 * patched with RECIPE = --force-rpath --add-rpath <profile> --shrink-rpath
 * --allowed-rpath-prefixes '$ORIGIN:<profile>'. An answer is recorded only for a file whose ctime
 * is more than SETTLE_MS older than the start of the recording run, and ctime cannot be set by a
 * program: the trees are built (most of them brought to the fixed point with --no-cache) in
 * beforeAll, which then waits a little over SETTLE_MS once for all of them.
 *
 * Checked (each test has its own tree and its own --cache-dir; no run may fall back to the
 * default cache directory):
 * - recording and reuse: a run records what it did not change (the object, in the run that
 *   patches the others), the next run records the files it confirms, the one after answers
 *   every ELF file from the cache with the same records (--no-resolve) and summary (but
 *   `cached`), the human summary says so, records still carry their resolution without
 *   --no-resolve; nothing in the tree is written (bytes, inode, mtime, ctime);
 * - a changed file is examined again: replaced by an unpatched copy, rewritten in place with the
 *   same size, inode and mtime (only ctime tells), or only chmod-ed; the others stay cached;
 * - a changed environment: a profile directory losing the library it provided, or gaining one it
 *   lacked, makes the next run decide afresh, with the results of a --no-cache run on a copy;
 * - one cache per options (other options neither use nor clobber it; a skipped no-dynamic record
 *   is cached too; a relative PATH is the same PATH); --no-cache neither reads nor writes the
 *   cache; ELFPATCH_CACHE_DIR is the default place, --cache-dir wins over it;
 * - --dry-run and --check read the cache but never write it (not even a first one);
 * - racy files: a file changed less than SETTLE_MS before a run is not recorded by it, and a run
 *   whose consulted profile library just changed records nothing; both are recorded once settled;
 * - a corrupt cache (truncated, garbage, empty, wrong shape or format, a directory, a cache dir
 *   that is a file) is ignored: the run gives the --no-cache records, exit 0, and repairs it; so is
 *   one of the right format and key with a wrong-shaped entry inside (a file's entry null, a
 *   directory's entry a number: were a failed file, and an internal error);
 * - the working directory is part of the key: with DT_RPATH "lib:<A>" a file's answer from one
 *   directory (where lib/ provides its dependency) is not given from another (gcc-built libraries);
 * - a consulted directory that changed within SETTLE_MS of the recording run is saved with the
 *   signature "~" (never equal): the answer is still given while the names looked up in it are as
 *   recorded, and decided afresh once the name that matters appears.
 */
import type { BatchSummary } from "../../src/batch/run.js";
import { decodeCache, encodeCache, SETTLE_MS, type CacheEntry, type CacheHeader } from "../../src/batch/cache.js";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildFixtures, fixture, fixtureSourceDir, repoRoot } from "../support/fixtures.js";
import { has } from "../support/oracle.js";

const CLI = path.join(repoRoot, "build", "js", "cli", "main.js");
const LIB_DIR = "/usr/lib/x86_64-linux-gnu";
/** Small system libraries that need nothing but libc.so.6 (those present are used). */
const PLAIN_LIBS = ["libz.so.1", "libbz2.so.1.0", "libffi.so.8", "libexpat.so.1", "liblzma.so.5", "libcrypt.so.1"];
/** A library needing one more library than libc.so.6, and that library (the first pair present). */
const DEP_PAIRS: [string, string][] = [["libreadline.so.8", "libtinfo.so.6"], ["libsqlite3.so.0", "libm.so.6"]];
const OLD_TIME = new Date("2001-02-03T04:05:06Z");
const TOOLS_READY = has("gcc") && ["libc.so.6", ...PLAIN_LIBS.slice(0, 3)].every((l) => fs.existsSync(path.join(LIB_DIR, l)));

interface Rec {
  schema: number;
  type: "file";
  path: string;
  status: string;
  changed: boolean;
  skipReason?: string;
  before?: { rpath: string | null; runpath: string | null; needed: string[] };
  after?: { rpath: string | null; runpath: string | null };
  resolution?: { status: string; missing: string[] };
  [k: string]: unknown;
}

type Summary = BatchSummary & { schema: number };

interface Run {
  status: number | null;
  records: Rec[];
  summary: Summary;
  /** N of "N files answered from the result cache" in the human summary (0 when absent). */
  answered: number;
  stderr: string;
}

interface CliOpts {
  cwd?: string;
  env?: Record<string, string>;
}

let work: string;
/** ELFPATCH_CACHE_DIR of every run that does not set its own: must never be created. */
let defaultCacheDir: string;
let plainLibs: string[] = [];
let depPair: [string, string] | undefined;

function cli(args: string[], opts: CliOpts = {}): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env, ELFPATCH_CACHE_DIR: defaultCacheDir, ...opts.env };
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000, env, ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  if (r.error) throw r.error;
  expect(fs.existsSync(defaultCacheDir), "a run fell back to the default cache directory").toBe(false);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `elfpatch patch --json --no-progress ARGS`: the parsed records and summary. */
function patch(args: string[], opts: CliOpts = {}): Run {
  const r = cli(["patch", "--json", "--no-progress", ...args], opts);
  expect(r.stdout.endsWith("\n"), `stdout ends with a newline; stderr: ${r.stderr}`).toBe(true);
  const objs = r.stdout.slice(0, -1).split("\n").map((l) => JSON.parse(l) as Rec | Summary);
  for (const o of objs) expect(o.schema).toBe(1);
  const summary = objs.pop() as Summary;
  expect(summary.type).toBe("summary");
  for (const o of objs) expect(o.type).toBe("file");
  const m = /; (\d+) files answered from the result cache\)/.exec(r.stderr);
  const answered = m ? Number(m[1]) : 0;
  expect(answered, "the human summary agrees with the --json summary").toBe(summary.cached);
  return { status: r.status, records: objs as Rec[], summary, answered, stderr: r.stderr };
}

/** The options of every test (with its own profile directories). */
function recipe(add: string, prefixes = add): string[] {
  return ["--force-rpath", "--add-rpath", add, "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${prefixes}`];
}

const cacheArgs = (dir: string): string[] => ["--cache-dir", dir];

/** Waits until whatever changed before now has settled for the result cache. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, SETTLE_MS + 300));

function sha256(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

interface Entry {
  hash: string;
  ino: number;
  size: number;
  mode: number;
  mtimeMs: number;
  ctimeMs: number;
}

/** Every regular file under `root` by relative path (a rewrite of any kind changes ctime). */
function snapshotFiles(root: string): Record<string, Entry> {
  const out: Record<string, Entry> = {};
  if (!fs.existsSync(root)) return out;
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) out[path.relative(root, p)] = { hash: sha256(p), ino: st.ino, size: st.size, mode: st.mode, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
    }
  };
  walk(root);
  return out;
}

/** Names in a cache directory. */
const cacheFiles = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);

/** The summary without what differs between a cached and an uncached run. */
function comparable(s: Summary): Omit<Summary, "cached" | "elapsedMs"> {
  const { cached: _c, elapsedMs: _e, ...rest } = s;
  return rest;
}

const byPath = (records: Rec[]): Map<string, Rec> => new Map(records.map((r) => [r.path, r]));

/** Records with one root replaced by another (to compare runs on copies). */
function rerooted(records: Rec[], from: string, to: string): Rec[] {
  return JSON.parse(JSON.stringify(records).split(from).join(to)) as Rec[];
}

function makeProfile(dir: string, libs: string[]): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const l of libs) fs.symlinkSync(path.join(LIB_DIR, l), path.join(dir, l));
  return dir;
}

/** The standard tree (see the header), or one holding only `libs` when given. */
function makeTree(dir: string, libs?: string[]): string {
  fs.mkdirSync(path.join(dir, "lib"), { recursive: true });
  for (const l of libs ?? plainLibs) fs.copyFileSync(path.join(LIB_DIR, l), path.join(dir, "lib", l));
  if (libs) return dir;
  fs.mkdirSync(path.join(dir, "bin"));
  fs.copyFileSync(fixture("prog_pie"), path.join(dir, "bin", "tool"));
  fs.chmodSync(path.join(dir, "bin", "tool"), 0o755);
  fs.mkdirSync(path.join(dir, "obj"));
  execFileSync("gcc", ["-c", "-fPIC", "-o", path.join(dir, "obj", "helper.o"), path.join(fixtureSourceDir, "dep.c")], { stdio: "pipe" });
  fs.writeFileSync(path.join(dir, "README.txt"), "not an ELF file\n");
  fs.writeFileSync(path.join(dir, "empty"), "");
  return dir;
}

/** The ELF files of a standard tree (one answer each). */
const elfCount = (): number => plainLibs.length + 2;

/** Builds the shared library `out` (soname: its base name) from `code`, linked with `libs`. */
function gccLib(out: string, code: string, libs: string[] = [], flags: string[] = []): void {
  const src = `${out}.c`;
  fs.writeFileSync(src, code);
  execFileSync("gcc", ["-shared", "-fPIC", "-o", out, `-Wl,-soname,${path.basename(out)}`, src, "-Wl,--no-as-needed", ...libs, ...flags], { stdio: "pipe" });
  fs.rmSync(src);
}

/** The cache file of a cache directory holding one, parsed. */
/** The one cache file of `dir`, decoded: its header, and each file's signature and record (null: not ELF). */
function cacheBody(dir: string): { header: CacheHeader; env: { dirs: Record<string, [string, Record<string, string>]> }; files: Record<string, [string, Rec | null]>; raw: Map<string, CacheEntry> } {
  const names = cacheFiles(dir);
  expect(names).toHaveLength(1);
  const body = decodeCache(fs.readFileSync(path.join(dir, names[0]!), "utf8"));
  expect(body).not.toBeNull();
  const files: Record<string, [string, Rec | null]> = {};
  for (const [p, [sig, verdict]] of body!.files) {
    // A verdict is "" (not ELF) or its record's status as one character, then the record's JSON.
    if (verdict !== "") expect(verdict[0], p).toBe((JSON.parse(verdict.slice(1)) as Rec).status === "unchanged" ? "u" : "s");
    files[p] = [sig, verdict === "" ? null : (JSON.parse(verdict.slice(1)) as Rec)];
  }
  return { header: body!.header, env: body!.header.env as ReturnType<typeof cacheBody>["env"], files, raw: body!.files };
}

/** Brings a tree to the fixed point of `opts` without the cache, then gives its files old times. */
/**
 * A tree whose answers are recorded in its own cache (run twice: the second is all cached), with
 * the `--no-cache` run to compare with.
 */
function recordedCache(tree: string, dirName: string) {
  const cache = path.join(work, dirName, "cache");
  const n = elfCount();
  const opts = [...recipe(t.profile!), "--no-resolve"];
  const args = [...cacheArgs(cache), ...opts, tree];
  const ref = patch(["--no-cache", ...opts, tree]);
  expect(ref.status).toBe(0);
  expect(patch(args).summary.cached).toBe(0);
  expect(patch(args).summary.cached).toBe(n);
  const [name] = cacheFiles(cache);
  return { tree, cache, n, opts, args, ref, name, file: path.join(cache, name!) };
}

/** A run over a broken cache: exit 0, nothing from the cache, the --no-cache answers; and it rewrites the cache. */
function expectNoCacheAnswers(what: string, args: string[], ref: Run, n: number): void {
  const r = patch(args);
  expect(r.status, `${what}: ${r.stderr}`).toBe(0);
  expect(r.summary.cached, what).toBe(0);
  expect(r.records, what).toEqual(ref.records);
  expect(comparable(r.summary), what).toEqual(comparable(ref.summary));
  expect(patch(args).summary.cached, what).toBe(n); // rewritten by that run: the next one answers from it
}

function prePatch(tree: string, opts: string[]): void {
  const p = cli(["patch", "--no-cache", "--no-progress", ...opts, tree]);
  expect(p.status, p.stderr).toBe(0);
  const c = cli(["patch", "--no-cache", "--no-progress", "--check", ...opts, tree]);
  expect(c.status, c.stdout + c.stderr).toBe(0);
  for (const rel of Object.keys(snapshotFiles(tree))) fs.utimesSync(path.join(tree, rel), OLD_TIME, OLD_TIME);
}

/** Per test: trees, profiles and cache dirs. */
const t: Record<string, string> = {};

beforeAll(async () => {
  if (!TOOLS_READY) return;
  expect(fs.existsSync(CLI), "build/js/cli/main.js is missing: run npm run build").toBe(true);
  await buildFixtures();
  work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-result-cache-")));
  defaultCacheDir = path.join(work, "default-cache");
  plainLibs = PLAIN_LIBS.filter((l) => fs.existsSync(path.join(LIB_DIR, l)));
  depPair = DEP_PAIRS.find((pair) => pair.every((l) => fs.existsSync(path.join(LIB_DIR, l))));
  const w = (name: string): string => path.join(work, name);

  // Profile shared by the tests that never change it.
  t.profile = makeProfile(w("profile/lib"), ["libc.so.6"]);
  const std = recipe(t.profile);
  // 1: an unpatched tree (the test patches it).
  t.tree1 = makeTree(w("t1/tree"));
  // 2, 4, 5, 7: at the fixed point of RECIPE.
  for (const n of ["2", "4", "5", "7"]) {
    t[`tree${n}`] = makeTree(w(`t${n}/tree`));
    prePatch(t[`tree${n}`]!, std);
  }
  // 6: its own profile (the test replaces a symlink in it).
  t.profile6 = makeProfile(w("t6/profile/lib"), ["libc.so.6"]);
  t.tree6 = makeTree(w("t6/tree"));
  prePatch(t.tree6, recipe(t.profile6));
  if (depPair) {
    const [lib, dep] = depPair;
    // 3r: the profile provides libc and the other dependency (the test takes libc away).
    t.profile3r = makeProfile(w("t3r/profile/lib"), ["libc.so.6", dep]);
    t.tree3r = makeTree(w("t3r/tree"), [plainLibs[0]!, lib]);
    prePatch(t.tree3r, recipe(t.profile3r));
    // 3a: profile A provides libc, B nothing yet (the test gives B the other dependency).
    t.a3 = makeProfile(w("t3a/a/lib"), ["libc.so.6"]);
    t.b3 = makeProfile(w("t3a/b/lib"), []);
    t.tree3a = makeTree(w("t3a/tree"), [plainLibs[0]!, lib]);
    prePatch(t.tree3a, recipe(`${t.a3}:${t.b3}`));
  }
  // 8: at the fixed point of RECIPE (the test writes caches of the wrong shape).
  t.tree8 = makeTree(w("t8/tree"));
  prePatch(t.tree8, std);
  // cwd: libf.so (NEEDED libx.so, DT_RPATH "lib:<A>") whose relative entry "lib" means w1/lib
  // (holding libx.so, NEEDED liby.so) from w1 and nothing from w2; A holds liby.so.
  t.aCwd = w("tcwd/A");
  t.w1 = w("tcwd/w1");
  t.w2 = w("tcwd/w2");
  t.treeCwd = w("tcwd/tree");
  for (const d of [t.aCwd, path.join(t.w1, "lib"), t.w2, t.treeCwd]) fs.mkdirSync(d, { recursive: true });
  gccLib(path.join(t.aCwd, "liby.so"), "int y(void) { return 1; }\n");
  gccLib(path.join(t.w1, "lib", "libx.so"), "int y(void);\nint x(void) { return y() + 1; }\n", [path.join(t.aCwd, "liby.so")]);
  gccLib(path.join(t.treeCwd, "libf.so"), "int x(void);\nint f(void) { return x() + 1; }\n", [path.join(t.w1, "lib", "libx.so")],
    ["-Wl,--disable-new-dtags", `-Wl,-rpath,lib:${t.aCwd}`]);
  // 9: libg.so NEEDED libq.so, which profile B lacks (the test adds an unrelated entry, then libq.so).
  t.b9 = w("t9/b/lib");
  t.libq9 = path.join(w("t9/build"), "libq.so");
  t.tree9 = w("t9/tree");
  for (const d of [t.b9, path.dirname(t.libq9), t.tree9]) fs.mkdirSync(d, { recursive: true });
  gccLib(t.libq9, "int q(void) { return 1; }\n");
  gccLib(path.join(t.tree9, "libg.so"), "int q(void);\nint g(void) { return q() + 1; }\n", [t.libq9]);
  prePatch(t.tree9, recipe(t.b9));
  await settle();
});

afterAll(() => {
  if (work && process.env.ELFPATCH_KEEP_TMP !== "1") fs.rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!TOOLS_READY)("elfpatch patch: the result cache", () => {
  it("records what a run did not change, then answers every ELF file from the cache: same records, nothing opened or written", async () => {
    const tree = t.tree1!;
    const cache = path.join(work, "t1", "cache");
    const args = [...cacheArgs(cache), ...recipe(t.profile!), "--no-resolve", tree];
    const n = elfCount();
    const helper = path.join(tree, "obj", "helper.o");

    // Run 1 patches; the patched files are not recorded, the settled ones it did not change are.
    const r1 = patch(args);
    expect(r1.status, r1.stderr).toBe(0);
    expect(r1.summary).toMatchObject({ files: n, patched: n - 1, skipped: 0, unchanged: 1, failed: 0, notElf: 2, cached: 0 });
    for (const r of r1.records) {
      if (r.path === helper) expect(r).toMatchObject({ status: "unchanged", before: { needed: [], rpath: null } });
      else expect(r.after?.rpath, r.path).toBe(r.path.endsWith("/tool") ? `$ORIGIN/deps:${t.profile}` : t.profile);
    }
    expect(cacheFiles(cache)).toHaveLength(1);

    await settle();
    // Run 2 confirms the patched files (they settled) and records them; the object comes from run 1.
    const before2 = snapshotFiles(tree);
    const r2 = patch(args);
    expect(r2.status, r2.stderr).toBe(0);
    expect(r2.summary).toMatchObject({ files: n, patched: 0, unchanged: n, skipped: 0, failed: 0, notElf: 2, cached: 1 });
    expect(snapshotFiles(tree)).toEqual(before2);

    // Run 3: every ELF file from the cache, the same records and counts.
    const r3 = patch(args);
    expect(r3.status, r3.stderr).toBe(0);
    expect(r3.summary.cached).toBe(n);
    expect(r3.answered).toBe(n);
    expect(r3.records).toEqual(r2.records);
    expect(comparable(r3.summary)).toEqual(comparable(r2.summary));
    expect(snapshotFiles(tree)).toEqual(before2);
    expect(cacheFiles(cache)).toHaveLength(1); // one cache file, no temp file left

    // With the resolution: cached records still carry it, as a --no-cache run gives it.
    const withRes = [...cacheArgs(cache), ...recipe(t.profile!), tree];
    const r3r = patch(withRes);
    const fresh = patch(["--no-cache", ...recipe(t.profile!), tree]);
    expect(r3r.status).toBe(0);
    expect(fresh.status).toBe(0);
    expect(r3r.summary.cached).toBe(n);
    expect(fresh.summary.cached).toBe(0);
    expect(r3r.records).toEqual(fresh.records);
    for (const r of r3r.records) {
      expect(r.status).toBe("unchanged");
      expect(r.resolution?.status, r.path).toEqual(expect.any(String));
      expect(r.resolution?.missing, r.path).toEqual(r.path.endsWith("/tool") ? ["libdep.so"] : []);
    }
    expect(snapshotFiles(tree)).toEqual(before2);
  });

  it("a file is examined again once it changed: replaced, rewritten with the same size, inode and mtime, or chmod-ed", () => {
    const tree = t.tree2!;
    const cache = path.join(work, "t2", "cache");
    const args = [...cacheArgs(cache), ...recipe(t.profile!), "--no-resolve", tree];
    const n = elfCount();
    const a = patch(args);
    expect(a.status, a.stderr).toBe(0);
    expect(a.summary).toMatchObject({ patched: 0, unchanged: n, cached: 0 });
    const b = patch(args);
    expect(b.summary.cached).toBe(n);

    const [replaced, rewritten, chmodded] = plainLibs.map((l) => path.join(tree, "lib", l));
    // Replaced by an unpatched copy (same inode: copyFile truncates and writes).
    fs.copyFileSync(path.join(LIB_DIR, path.basename(replaced!)), replaced!);
    // The run path string edited in place: same size, inode and mtime; only ctime tells.
    const st = fs.lstatSync(rewritten!);
    const bytes = fs.readFileSync(rewritten!);
    const needle = Buffer.from(`${t.profile}\0`);
    let hits = 0;
    for (let i = bytes.indexOf(needle); i >= 0; i = bytes.indexOf(needle, i + 1), hits++) bytes[i + needle.length - 2] = 0x58; // ".../liX"
    expect(hits).toBeGreaterThan(0);
    const fd = fs.openSync(rewritten!, "r+");
    try {
      fs.writeSync(fd, bytes, 0, bytes.length, 0);
    } finally {
      fs.closeSync(fd);
    }
    fs.utimesSync(rewritten!, OLD_TIME, OLD_TIME);
    const st2 = fs.lstatSync(rewritten!);
    expect([st2.ino, st2.size, st2.mtimeMs]).toEqual([st.ino, st.size, st.mtimeMs]);
    expect(st2.ctimeMs).not.toBe(st.ctimeMs);
    // Only the mode: the bytes (and so the answer) are the same.
    fs.chmodSync(chmodded!, 0o700);

    // What the answers are now (no cache, nothing written).
    const oracle = byPath(patch(["--no-cache", "--dry-run", ...recipe(t.profile!), "--no-resolve", tree]).records);
    expect(oracle.get(replaced!)?.status).toBe("would-patch");
    expect(oracle.get(rewritten!)?.status).toBe("would-patch");
    expect(oracle.get(chmodded!)?.status).toBe("unchanged");

    const c = patch(args);
    expect(c.status, c.stderr).toBe(0);
    expect(c.summary).toMatchObject({ patched: 2, unchanged: n - 2, cached: n - 3 });
    const rc = byPath(c.records);
    expect(rc.get(replaced!)).toMatchObject({ status: "patched", after: { rpath: t.profile } });
    expect(rc.get(rewritten!)).toMatchObject({ status: "patched", before: { rpath: `${t.profile!.slice(0, -1)}X` }, after: { rpath: t.profile } });
    expect(rc.get(chmodded!)).toMatchObject({ status: "unchanged" });
    for (const r of b.records) if (![replaced, rewritten, chmodded].includes(r.path)) expect(rc.get(r.path)).toEqual(r);
    const check = cli(["patch", "--no-cache", "--check", "--no-progress", ...recipe(t.profile!), tree]);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it.skipIf(!DEP_PAIRS.some((p) => p.every((l) => fs.existsSync(path.join(LIB_DIR, l)))))(
    "a decision that depended on a profile directory is made afresh once it changed (a library removed, or added where none was)",
    () => {
      const [lib, dep] = depPair!;
      const scenario = (name: string, tree: string, opts: string[], change: () => void): { cached: Run; fresh: Run; copy: string } => {
        const cache = path.join(work, name, "cache");
        const args = [...cacheArgs(cache), ...opts, "--no-resolve", tree];
        const r1 = patch(args);
        expect(r1.status, r1.stderr).toBe(0);
        expect(r1.summary).toMatchObject({ files: 2, patched: 0, unchanged: 2, cached: 0 });
        expect(byPath(r1.records).get(path.join(tree, "lib", lib))?.before?.needed).toContain(dep);
        expect(patch(args).summary.cached).toBe(2);
        change();
        const copy = path.join(work, name, "copy");
        fs.cpSync(tree, copy, { recursive: true });
        const cached = patch(args);
        expect(cached.status, cached.stderr).toBe(0);
        expect(cached.summary.cached).toBe(0);
        const fresh = patch(["--no-cache", ...opts, "--no-resolve", copy]);
        expect(fresh.status, fresh.stderr).toBe(0);
        // The same answers and the same bytes as without the cache.
        expect(cached.records).toEqual(rerooted(fresh.records, copy, tree));
        expect(comparable(cached.summary)).toEqual(comparable(fresh.summary));
        expect(Object.fromEntries(Object.entries(snapshotFiles(tree)).map(([k, e]) => [k, e.hash])))
          .toEqual(Object.fromEntries(Object.entries(snapshotFiles(copy)).map(([k, e]) => [k, e.hash])));
        return { cached, fresh, copy };
      };

      // The profile loses libc.so.6: libz no longer needs it (its DT_RPATH goes); the other
      // library keeps it for its second dependency.
      const p = t.profile3r!;
      const r = scenario("t3r", t.tree3r!, recipe(p), () => fs.unlinkSync(path.join(p, "libc.so.6")));
      const rr = byPath(r.cached.records);
      expect(rr.get(path.join(t.tree3r!, "lib", plainLibs[0]!))).toMatchObject({ status: "patched", after: { rpath: null, runpath: null } });
      expect(rr.get(path.join(t.tree3r!, "lib", lib))).toMatchObject({ status: "unchanged", after: { rpath: p } });

      // B provided nothing and was dropped; now it provides the second dependency: it is kept.
      const [a, b] = [t.a3!, t.b3!];
      const s = scenario("t3a", t.tree3a!, recipe(`${a}:${b}`), () => fs.symlinkSync(path.join(LIB_DIR, dep), path.join(b, dep)));
      const sr = byPath(s.cached.records);
      expect(sr.get(path.join(t.tree3a!, "lib", lib))).toMatchObject({ status: "patched", before: { rpath: a }, after: { rpath: `${a}:${b}` } });
      expect(sr.get(path.join(t.tree3a!, "lib", plainLibs[0]!))).toMatchObject({ status: "unchanged", after: { rpath: a } });
    },
  );

  it("one cache per options (others neither use nor clobber it); --no-cache never reads or writes it; ELFPATCH_CACHE_DIR", () => {
    const tree = t.tree4!;
    const cache = path.join(work, "t4", "cache");
    const n = elfCount();
    const opts = [...recipe(t.profile!), "--no-resolve"];
    expect(patch([...cacheArgs(cache), ...opts, tree]).summary.cached).toBe(0);
    const ref = patch([...cacheArgs(cache), ...opts, tree]);
    expect(ref.summary.cached).toBe(n);
    expect(cacheFiles(cache)).toHaveLength(1);

    // Without --shrink-rpath the libraries' answers are the same, but not taken from the other
    // cache; the object is skipped (its run path would not be empty): that answer is cached too.
    const other = ["--force-rpath", "--add-rpath", t.profile!, "--allowed-rpath-prefixes", `$ORIGIN:${t.profile}`, "--no-resolve"];
    const helper = path.join(tree, "obj", "helper.o");
    const o1 = patch([...cacheArgs(cache), ...other, tree]);
    expect(o1.status, o1.stderr).toBe(0);
    expect(o1.summary).toMatchObject({ unchanged: n - 1, skipped: 1, cached: 0 });
    expect(o1.records.filter((r) => r.path !== helper)).toEqual(ref.records.filter((r) => r.path !== helper));
    expect(byPath(o1.records).get(helper)).toMatchObject({ status: "skipped", skipReason: "no-dynamic" });
    expect(cacheFiles(cache)).toHaveLength(2);
    const o2 = patch([...cacheArgs(cache), ...other, tree]);
    expect(o2.summary.cached).toBe(n);
    expect(o2.records).toEqual(o1.records);
    expect(comparable(o2.summary)).toEqual(comparable(o1.summary));
    expect(patch([...cacheArgs(cache), ...opts, tree]).summary.cached).toBe(n); // the first is still there
    // Options with other answers: none of the cached "unchanged" is given.
    const set = patch([...cacheArgs(cache), "--check", "--set-rpath", "/nonexistent/elsewhere", "--no-resolve", tree]);
    expect(set.status).toBe(1);
    expect(set.summary).toMatchObject({ wouldPatch: n - 1, cached: 0 });

    // The same PATH spelled relative to the working directory (the same one: it is part of the
    // key, see the relative run-path test): the same cache.
    const relTree = path.relative(process.cwd(), tree);
    expect(path.isAbsolute(relTree)).toBe(false);
    const rel = patch([...cacheArgs(cache), ...opts, relTree]);
    expect(rel.summary.cached).toBe(n);
    expect(rel.records).toEqual(ref.records);

    // --no-cache: a valid cache is not read, and not written.
    const snap = snapshotFiles(cache);
    const nc = patch(["--no-cache", ...cacheArgs(cache), ...opts, tree]);
    expect(nc.status).toBe(0);
    expect(nc.summary.cached).toBe(0);
    expect(nc.records).toEqual(ref.records);
    expect(snapshotFiles(cache)).toEqual(snap);
    const fresh = path.join(work, "t4", "never");
    expect(patch(["--no-cache", ...cacheArgs(fresh), ...opts, tree]).status).toBe(0);
    expect(fs.existsSync(fresh)).toBe(false);
    const envDir = path.join(work, "t4", "env-cache");
    expect(patch(["--no-cache", ...opts, tree], { env: { ELFPATCH_CACHE_DIR: envDir } }).status).toBe(0);
    expect(fs.existsSync(envDir)).toBe(false);

    // ELFPATCH_CACHE_DIR is where the cache lives without --cache-dir; --cache-dir wins over it.
    expect(patch([...opts, tree], { env: { ELFPATCH_CACHE_DIR: envDir } }).summary.cached).toBe(0);
    expect(cacheFiles(envDir)).toHaveLength(1);
    expect(patch([...opts, tree], { env: { ELFPATCH_CACHE_DIR: envDir } }).summary.cached).toBe(n);
    const unused = path.join(work, "t4", "env-unused");
    expect(patch([...cacheArgs(cache), ...opts, tree], { env: { ELFPATCH_CACHE_DIR: unused } }).summary.cached).toBe(n);
    expect(fs.existsSync(unused)).toBe(false);
  });

  it("--dry-run and --check read the cache but never write it", () => {
    const tree = t.tree5!;
    const cache = path.join(work, "t5", "cache");
    const n = elfCount();
    const opts = [...cacheArgs(cache), ...recipe(t.profile!), "--no-resolve"];
    // No cache yet: none is created.
    for (const mode of ["--dry-run", "--check"]) {
      const r = patch([mode, ...opts, tree]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.summary).toMatchObject({ unchanged: n, cached: 0 });
      expect(fs.existsSync(cache), mode).toBe(false);
    }
    const rec = patch([...opts, tree]);
    expect(rec.summary.cached).toBe(0);
    expect(cacheFiles(cache)).toHaveLength(1);
    const snap = snapshotFiles(cache);
    // Read: every answer from the cache.
    for (const mode of ["--dry-run", "--check"]) {
      const r = patch([mode, ...opts, tree]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.summary.cached, mode).toBe(n);
      expect(r.records).toEqual(rec.records);
      expect(snapshotFiles(cache)).toEqual(snap);
    }
    // A file changed: a run would rewrite the cache (without it), a dry run does not.
    const lib = path.join(tree, "lib", plainLibs[0]!);
    fs.chmodSync(lib, 0o700);
    for (const mode of ["--dry-run", "--check"]) {
      const r = patch([mode, ...opts, tree]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.summary.cached, mode).toBe(n - 1);
      expect(snapshotFiles(cache), mode).toEqual(snap);
    }
    const control = patch([...opts, tree]);
    expect(control.summary.cached).toBe(n - 1);
    expect(snapshotFiles(cache)).not.toEqual(snap);
  });

  it("a file or a consulted library changed less than SETTLE_MS before a run is not recorded by it; once settled it is", async () => {
    const tree = t.tree6!;
    const cache = path.join(work, "t6", "cache");
    const n = elfCount();
    const args = [...cacheArgs(cache), ...recipe(t.profile6!), "--no-resolve", tree];
    expect(patch(args).summary.cached).toBe(0);
    expect(patch(args).summary.cached).toBe(n);

    // A racy file: examined again (its signature changed), and not recorded by that run.
    const lib = path.join(tree, "lib", plainLibs[0]!);
    fs.chmodSync(lib, 0o700);
    const a = patch(args);
    expect(a.status, a.stderr).toBe(0);
    expect(a.summary).toMatchObject({ cached: n - 1, unchanged: n });
    const b = patch(args);
    expect(b.summary.cached).toBe(n - 1);
    expect(byPath(b.records).get(lib)?.status).toBe("unchanged");

    // A racy consulted path: the profile's symlink replaced by an equal one (another inode).
    const link = path.join(t.profile6!, "libc.so.6");
    const snap = snapshotFiles(cache);
    fs.unlinkSync(link);
    fs.symlinkSync(path.join(LIB_DIR, "libc.so.6"), link);
    const e = patch(args);
    expect(e.status, e.stderr).toBe(0);
    expect(e.summary).toMatchObject({ cached: 0, unchanged: n });
    expect(e.records).toEqual(b.records);
    expect(snapshotFiles(cache)).toEqual(snap); // nothing recorded
    expect(patch(args).summary.cached).toBe(0);

    await settle();
    const g = patch(args);
    expect(g.summary.cached).toBe(0);
    const h = patch(args);
    expect(h.summary.cached).toBe(n); // the chmod-ed library included
    expect(h.records).toEqual(b.records);
  });

  it("a corrupt or unusable cache is ignored: the run gives the --no-cache answers, exits 0 and repairs it", () => {
    const { tree, cache, n, opts, args, ref, name, file } = recordedCache(t.tree7!, "t7");
    const good = fs.readFileSync(file);
    const { header, raw } = cacheBody(cache);
    const entries = [...raw];
    const nl = good.indexOf(0x0a);
    const garbage = Buffer.alloc(4096);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) & 0xff;
    const corruptions: [string, Buffer | string][] = [
      ["truncated", good.subarray(0, Math.floor(good.length / 2))],
      ["truncated after an entry's path", Buffer.concat([good.subarray(0, good.indexOf(0, nl)), Buffer.from([0])])],
      ["no entries' end", good.subarray(0, good.length - 1)],
      ["garbage", garbage],
      ["empty", ""],
      ["JSON null", "null\n"],
      ["an array", "[1,2,3]\n"],
      ["the previous format (one JSON document)", JSON.stringify({ format: 2, key: header.key, env: header.env, files: {} })],
      ["another format", encodeCache({ ...header, format: 999 }, entries)],
      ["another key", encodeCache({ ...header, key: "0".repeat(64) }, entries)],
      ["no environment", encodeCache({ ...header, env: undefined as unknown as CacheHeader["env"] }, entries)],
      ["environment files not an object", encodeCache({ ...header, env: { ...header.env, files: "x" as unknown as Record<string, string> } }, entries)],
      ["an empty signature", encodeCache(header, entries.map(([p, [, v]]) => [p, ["", v]]))],
    ];
    for (const [what, content] of corruptions) {
      fs.writeFileSync(file, content);
      expectNoCacheAnswers(what, args, ref, n);
      expect(cacheFiles(cache), what).toEqual([name]);
    }
    // A directory where the cache file goes: neither read nor written, no error, no temp file left.
    fs.rmSync(file);
    fs.mkdirSync(path.join(file, "sub"), { recursive: true });
    for (let i = 0; i < 2; i++) {
      const r = patch(args);
      expect(r.status, r.stderr).toBe(0);
      expect(r.summary.cached).toBe(0);
      expect(r.records).toEqual(ref.records);
    }
    expect(cacheFiles(cache)).toEqual([name]);
    // A cache directory that is a file: no error, the file untouched.
    const notDir = path.join(work, "t7", "not-a-dir");
    fs.writeFileSync(notDir, "x");
    const r = patch([...cacheArgs(notDir), ...opts, tree]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.records).toEqual(ref.records);
    expect(fs.readFileSync(notDir, "utf8")).toBe("x");
  });
  it("a cache file of the right format and key but the wrong shape inside is no cache: no failure, the --no-cache answers", () => {
    const { tree, cache, n, args, ref, file } = recordedCache(t.tree8!, "t8");
    const { header, files, raw } = cacheBody(cache);
    const lib = path.join(tree, "lib", plainLibs[0]!);
    expect(files[lib]?.[1]).toMatchObject({ status: "unchanged" });
    const entries = [...raw];
    // Was an internal error of the run, exit 3 (the entry was taken apart as a pair).
    fs.writeFileSync(file, encodeCache({ ...header, env: { ...header.env, dirs: { "/tmp": 5 as unknown as [string, Record<string, string>] } } }, entries));
    expectNoCacheAnswers("a directory's entry a number", args, ref, n);
    // A file's record that is not one is not an answer: that file is examined (as without the
    // cache), the others are still answered from it.
    const record = entries.find(([p]) => p === lib)![1][1].slice(1);
    const bad: [string, string][] = [
      ["not JSON", "u{"], ["JSON null", "unull"], ["a failed record", `u${JSON.stringify({ status: "failed" })}`],
      ["no status character", record], ["an unknown status character", `x${record}`], ["a status character the record contradicts", `s${record}`],
    ];
    for (const [what, verdict] of bad) {
      fs.writeFileSync(file, encodeCache(header, entries.map(([p, e]) => [p, p === lib ? [e[0], verdict] : e])));
      const r = patch(args);
      expect(r.status, `${what}: ${r.stderr}`).toBe(0);
      expect(r.summary.cached, what).toBe(n - 1);
      expect(r.records, what).toEqual(ref.records);
    }
    // Without --json an unchanged file's record is not printed and its JSON is not parsed: the
    // status character is the answer, if the rest looks like one object.
    const lightCases = [
      ["light: a record", `u${record}`, n],
      // Not valid JSON, but never parsed: proof that the light path reads no record.
      ["light: the JSON is not read", 'u{"status":"unchanged"}}', n],
      ["light: not an object", "unull", n - 1],
    ] as const;
    for (const [what, verdict, answered] of lightCases) {
      fs.writeFileSync(file, encodeCache(header, entries.map(([p, e]) => [p, p === lib ? [e[0], verdict] : e])));
      const h = cli(["patch", "--no-progress", ...args]);
      expect(h.status, `${what}: ${h.stderr}`).toBe(0);
      expect(h.stdout, what).toBe("");
      expect(h.stderr, what).toContain(`0 patched, ${n} unchanged`);
      expect(h.stderr, what).toContain(`${answered} files answered from the result cache`);
    }
  });

  it("the working directory is part of the key: an answer that used a relative run-path entry is not given in another one", () => {
    const [tree, w1, w2, a] = [t.treeCwd!, t.w1!, t.w2!, t.aCwd!];
    const libf = path.join(tree, "libf.so");
    const cache = path.join(work, "tcwd", "cache");
    const opts = ["--force-rpath", "--shrink-rpath", "--no-resolve"];
    const args = [...cacheArgs(cache), ...opts, tree];
    // From w1, "lib" provides libx.so and A its liby.so (DT_RPATH is inherited): both stay.
    const r1 = patch(args, { cwd: w1 });
    expect(r1.status, r1.stderr).toBe(0);
    expect(r1.summary).toMatchObject({ files: 1, unchanged: 1, cached: 0 });
    expect(r1.records[0]).toMatchObject({ path: libf, status: "unchanged", before: { rpath: `lib:${a}`, runpath: null } });
    expect(r1.records[0]?.before?.needed).toContain("libx.so");
    const r2 = patch(args, { cwd: w1 });
    expect(r2.summary.cached).toBe(1);
    expect(r2.records).toEqual(r1.records);

    // From w2 (no lib/ there) A serves nothing: it goes ("lib", relative, is kept as patchelf does).
    const oracle = patch(["--no-cache", "--dry-run", ...opts, tree], { cwd: w2 });
    expect(oracle.status, oracle.stderr).toBe(0);
    expect(oracle.records[0]).toMatchObject({ path: libf, status: "would-patch" });
    const d = patch(["--dry-run", ...args], { cwd: w2 });
    expect(d.status, d.stderr).toBe(0);
    expect(d.summary.cached).toBe(0);
    expect(d.records).toEqual(oracle.records);
    expect(comparable(d.summary)).toEqual(comparable(oracle.summary));
    // w1's answer is still there; a run from w2 patches.
    expect(patch(args, { cwd: w1 }).summary.cached).toBe(1);
    const p = patch(args, { cwd: w2 });
    expect(p.status, p.stderr).toBe(0);
    expect(p.summary).toMatchObject({ patched: 1, cached: 0 });
    expect(p.records[0]).toMatchObject({ path: libf, status: "patched", after: { rpath: "lib", runpath: null } });
  });

  it("a consulted directory that changed within SETTLE_MS of the recording run is recorded as unsettled (\"~\"): its names are checked one by one", () => {
    const [tree, b] = [t.tree9!, t.b9!];
    const libg = path.join(tree, "libg.so");
    const cache = path.join(work, "t9", "cache");
    const opts = [...recipe(b), "--no-resolve"];
    const args = [...cacheArgs(cache), ...opts, tree];
    // B gets an entry nothing looks up, right before the recording run.
    const changed = Date.now();
    fs.writeFileSync(path.join(b, "README.txt"), "unrelated\n");
    const r1 = patch(args);
    expect(Date.now() - changed, "the recording run ran within SETTLE_MS of the change").toBeLessThan(SETTLE_MS);
    expect(r1.status, r1.stderr).toBe(0);
    expect(r1.summary).toMatchObject({ files: 1, unchanged: 1, cached: 0 });
    expect(r1.records[0]).toMatchObject({ path: libg, status: "unchanged", after: { rpath: null, runpath: null } });
    const body = cacheBody(cache);
    expect(body.files[libg]?.[1]).toMatchObject({ status: "unchanged" }); // the file is settled: recorded
    expect(body.env.dirs[b]).toEqual(["~", expect.objectContaining({ "libq.so": "-" })]);
    expect(body.env.dirs[b]![1]).not.toHaveProperty("README.txt");
    // A settled directory keeps its signature.
    expect(body.env.dirs[tree]?.[0]).toMatch(/^\d+:\d+:\d+:[\d.]+:[\d.]+$/);

    // Its names are as recorded: the answer is given.
    const r2 = patch(args);
    expect(r2.summary.cached).toBe(1);
    expect(r2.records).toEqual(r1.records);
    // The name that matters appears: decided afresh, as without the cache.
    fs.symlinkSync(t.libq9!, path.join(b, "libq.so"));
    const oracle = patch(["--no-cache", "--dry-run", ...opts, tree]);
    expect(oracle.records[0]).toMatchObject({ path: libg, status: "would-patch" });
    const r3 = patch(args);
    expect(r3.status, r3.stderr).toBe(0);
    expect(r3.summary).toMatchObject({ patched: 1, cached: 0 });
    expect(r3.records[0]).toMatchObject({ path: libg, status: "patched", after: { rpath: b, runpath: null } });
  });
});
