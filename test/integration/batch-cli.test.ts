/**
 * The batch CLI (`elfpatch patch [ops] PATH...`, build/js/cli/main.js) spawned on a venv-like tree
 * of real ELF files:
 *
 *   venv/bin/tool                                         fixture prog_pie (an executable, no extension)
 *   venv/bin/python -> /usr/bin/python3 (or /bin/true)    a symlink leading outside: symlink-outside
 *   venv/lib/python3.11/site-packages/
 *     pkg/__init__.py, pkg/core.py                        Python files (not ELF)
 *     pkg/_ext.cpython-311-x86_64-linux-gnu.so            built here from fixtures/src/main.c:
 *                                                         RUNPATH $ORIGIN/../pkg.libs, NEEDED libdep.so
 *     pkg/_ext.so -> _ext.cpython-311-x86_64-linux-gnu.so a symlink inside the batch: skipped, symlink
 *     pkg/libfake.so                                      text named .so (not ELF)
 *     pkg/libhelper.a                                     a static archive built with ar (not ELF)
 *     pkg/_broken.so                                      (some tests) a truncated copy of _ext: ELF_* failure
 *     pkg.libs/libdep.so                                  fixture libdep.so, mode 0644
 *     pkg.libs/<system libraries>.so.N                    copies of a few libraries of this machine
 *
 * Checked: NDJSON shape and summary counts, failures do not stop the batch (exit 1, broken bytes
 * untouched), --dry-run/--check write nothing, a second run is a no-op (bytes, inodes, mtimes),
 * usage errors (exit 2, nothing written), determinism across fresh copies and -j 1/-j 2,
 * --include/--exclude (base-name and relative globs; no records for non-ELF files), overlapping
 * PATHs, --follow-symlinks, uv-style hard links (break / preserve / --in-place), a running process
 * that has the library mapped (it keeps the old, now unlinked inode), mode/owner/group (setuid and
 * setgid bits included) kept by a default-mode patch, and a read-only file of an unprivileged user
 * (run as uid 65534 when the tests run as root).
 */
import type { BatchSummary } from "../../src/batch/run.js";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildFixtures, fixture, fixtureSourceDir, repoRoot } from "../support/fixtures.js";
import { dlopenCheck, dynStrings, has, readelfDynamic } from "../support/oracle.js";

const CLI = path.join(repoRoot, "build", "js", "cli", "main.js");
const TOOLS_READY = ["gcc", "ar", "readelf"].every(has);
const LIB_DIR = "/usr/lib/x86_64-linux-gnu";
/** Small system libraries copied into pkg.libs (those present are used). */
const SYSTEM_LIBS = [
  "libz.so.1", "libm.so.6", "libbz2.so.1.0", "liblzma.so.5", "libffi.so.8", "libexpat.so.1", "libzstd.so.1",
  "libcrypt.so.1", "libuuid.so.1", "libgdbm.so.6", "libreadline.so.8", "libsqlite3.so.0",
];
const SITE = "lib/python3.11/site-packages";
const EXT = `${SITE}/pkg/_ext.cpython-311-x86_64-linux-gnu.so`;
const DEP = `${SITE}/pkg.libs/libdep.so`;
const BROKEN = `${SITE}/pkg/_broken.so`;
/** Long enough that no library has room for it in place: some files grow. */
const ADD_DIR = "/opt/elfpatch-batch-cli-test/a/rather/long/directory/name/so/that/files/must/grow/lib";
const OPS = ["--add-rpath", ADD_DIR];
const OLD_TIME = new Date("2001-02-03T04:05:06Z");

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

interface Rec {
  schema: number;
  type: "file" | "summary";
  path: string;
  status: string;
  changed: boolean;
  strategy: string | null;
  bytesAdded: number;
  edits: number;
  error?: { code: string; message: string };
  skipReason?: string;
  duplicateOf?: string;
  relinked?: string[];
  after?: { runpath: string | null; rpath: string | null };
  [k: string]: unknown;
}

type Summary = BatchSummary & { schema: number };

function cli(args: string[], as?: { uid: number; gid: number }): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000, ...(as ?? {}) });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Parses NDJSON stdout strictly: every line one JSON object, file records then one summary. */
function parseNdjson(stdout: string): { records: Rec[]; summary: Summary } {
  expect(stdout.endsWith("\n"), "stdout ends with a newline").toBe(true);
  const lines = stdout.slice(0, -1).split("\n");
  const objs = lines.map((l, i) => {
    try {
      return JSON.parse(l) as Rec | Summary;
    } catch {
      throw new Error(`stdout line ${i + 1} is not JSON: ${l.slice(0, 200)}`);
    }
  });
  for (const o of objs) expect(o.schema).toBe(1);
  const last = objs.pop();
  expect(last?.type).toBe("summary");
  for (const o of objs) expect(o.type).toBe("file");
  return { records: objs as Rec[], summary: last as Summary };
}

let work: string;
/** The venv template (never patched; tests copy it). */
let template: string;
/** The system libraries of SYSTEM_LIBS present here. */
let systemLibs: string[] = [];
let cCounter = 0;

function sha256(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

interface Entry {
  kind: "file" | "symlink" | "dir";
  hash?: string;
  ino?: number;
  mtimeMs?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  nlink?: number;
  target?: string;
}

/** Every entry under `root` (symlinks not followed), by relative path. */
function snapshotTree(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const rel = path.relative(root, p);
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) out.set(rel, { kind: "symlink", target: fs.readlinkSync(p) });
      else if (st.isDirectory()) {
        out.set(rel, { kind: "dir" });
        walk(p);
      } else {
        out.set(rel, { kind: "file", hash: sha256(p), ino: st.ino, mtimeMs: st.mtimeMs, mode: st.mode, uid: st.uid, gid: st.gid, nlink: st.nlink });
      }
    }
  };
  walk(root);
  return out;
}

/** Only the content of a snapshot: hashes and link targets (what must match across copies). */
function contentOf(s: Map<string, Entry>): Record<string, string> {
  const o: Record<string, string> = {};
  for (const [k, e] of s) o[k] = e.kind === "file" ? `file ${e.hash}` : e.kind === "symlink" ? `-> ${e.target}` : "dir";
  return o;
}

function setOldTimes(root: string): void {
  for (const [rel, e] of snapshotTree(root)) if (e.kind === "file") fs.utimesSync(path.join(root, rel), OLD_TIME, OLD_TIME);
}

/** A fresh copy of the venv template; `broken` adds the truncated ELF file. */
function freshVenv(broken: boolean): string {
  const dir = fs.mkdtempSync(path.join(work, "venv-"));
  const venv = path.join(dir, "venv");
  fs.cpSync(template, venv, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  if (!broken) fs.rmSync(path.join(venv, BROKEN));
  return venv;
}

function gcc(args: string[]): void {
  execFileSync("gcc", args, { stdio: ["ignore", "pipe", "pipe"] });
}

/** Builds the venv template once. */
function buildTemplate(dir: string): void {
  const site = path.join(dir, SITE);
  fs.mkdirSync(path.join(site, "pkg"), { recursive: true });
  fs.mkdirSync(path.join(site, "pkg.libs"), { recursive: true });
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true });
  fs.copyFileSync(fixture("libdep.so"), path.join(dir, DEP));
  fs.chmodSync(path.join(dir, DEP), 0o644);
  gcc([
    "-shared", "-fPIC", "-O1", "-o", path.join(dir, EXT), path.join(fixtureSourceDir, "main.c"),
    "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../pkg.libs", path.join(dir, DEP),
  ]);
  fs.chmodSync(path.join(dir, EXT), 0o755);
  fs.symlinkSync("_ext.cpython-311-x86_64-linux-gnu.so", path.join(site, "pkg", "_ext.so"));
  fs.writeFileSync(path.join(site, "pkg", "__init__.py"), "from ._ext import *\n");
  fs.writeFileSync(path.join(site, "pkg", "core.py"), "def f():\n    return 1\n");
  fs.writeFileSync(path.join(site, "pkg", "libfake.so"), "/* GNU ld script */\nINPUT(libdep.so)\n");
  const obj = path.join(work, "helper.o");
  gcc(["-c", "-fPIC", "-o", obj, path.join(fixtureSourceDir, "dep.c")]);
  execFileSync("ar", ["rcs", path.join(site, "pkg", "libhelper.a"), obj]);
  const extBytes = fs.readFileSync(path.join(dir, EXT));
  fs.writeFileSync(path.join(dir, BROKEN), extBytes.subarray(0, Math.floor(extBytes.length / 3)));
  fs.copyFileSync(fixture("prog_pie"), path.join(dir, "bin", "tool"));
  fs.chmodSync(path.join(dir, "bin", "tool"), 0o755);
  fs.symlinkSync(fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "/bin/true", path.join(dir, "bin", "python"));
  for (const lib of systemLibs) fs.copyFileSync(path.join(LIB_DIR, lib), path.join(site, "pkg.libs", lib));
}

/** The paths the CLI must report for a tree (absolute): ELF files and skipped symlinks. */
function expectedRecordPaths(venv: string, broken: boolean): string[] {
  const p = [
    path.join(venv, "bin", "tool"),
    path.join(venv, "bin", "python"),
    path.join(venv, EXT),
    path.join(venv, SITE, "pkg", "_ext.so"),
    path.join(venv, DEP),
    ...systemLibs.map((l) => path.join(venv, SITE, "pkg.libs", l)),
  ];
  if (broken) p.push(path.join(venv, BROKEN));
  return p.sort();
}

const byPath = (records: Rec[]): Map<string, Rec> => new Map(records.map((r) => [r.path, r]));

/** The run path readelf sees (RUNPATH, else RPATH). */
function readelfRunpath(file: string): string | null {
  const d = readelfDynamic(file);
  return dynStrings(d, "RUNPATH")[0] ?? dynStrings(d, "RPATH")[0] ?? null;
}

/** JSON output with the root replaced and timings dropped, for comparing runs. */
function normalizeOutput(stdout: string, root: string): unknown[] {
  return stdout
    .trim()
    .split("\n")
    .map((l) => {
      const o = JSON.parse(l.split(root).join("<ROOT>")) as Record<string, unknown>;
      delete o.elapsedMs;
      return o;
    });
}

beforeAll(async () => {
  if (!TOOLS_READY) return;
  expect(fs.existsSync(CLI), "build/js/cli/main.js is missing: run npm run build").toBe(true);
  await buildFixtures();
  work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-batch-cli-")));
  systemLibs = SYSTEM_LIBS.filter((l) => fs.existsSync(path.join(LIB_DIR, l)));
  expect(systemLibs.length).toBeGreaterThanOrEqual(4);
  template = path.join(work, "template");
  buildTemplate(template);
});

afterAll(() => {
  if (work && process.env.ELFPATCH_KEEP_TMP !== "1") fs.rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!TOOLS_READY)("elfpatch patch (batch CLI)", () => {
  it("--json: NDJSON records sorted by path, one summary whose counts match; the human summary on stderr", () => {
    const venv = freshVenv(true);
    const r = cli(["patch", "--json", ...OPS, venv]);
    expect(r.status, r.stderr).toBe(1); // the broken file
    const { records, summary } = parseNdjson(r.stdout);
    const paths = records.map((x) => x.path);
    expect(paths).toEqual([...paths].sort());
    expect(paths).toEqual(expectedRecordPaths(venv, true));
    const rec = byPath(records);
    // Skipped: the symlink inside the batch names its target; the one outside is not followed.
    expect(rec.get(path.join(venv, SITE, "pkg", "_ext.so"))).toMatchObject({ status: "skipped", skipReason: "symlink", duplicateOf: path.join(venv, EXT) });
    expect(rec.get(path.join(venv, "bin", "python"))).toMatchObject({ status: "skipped", skipReason: "symlink-outside" });
    // Every ELF file with a dynamic section got the directory; readelf agrees with the record.
    for (const p of [path.join(venv, EXT), path.join(venv, DEP), path.join(venv, "bin", "tool"), ...systemLibs.map((l) => path.join(venv, SITE, "pkg.libs", l))]) {
      const x = rec.get(p)!;
      expect(x.status, p).toBe("patched");
      expect(x.changed).toBe(true);
      expect(x.edits).toBeGreaterThan(0);
      const rp = x.after?.runpath ?? x.after?.rpath ?? null;
      expect(rp?.split(":")).toContain(ADD_DIR);
      expect(readelfRunpath(p)).toBe(rp);
    }
    expect(rec.get(path.join(venv, EXT))!.after!.runpath).toBe(`$ORIGIN/../pkg.libs:${ADD_DIR}`);
    // The counts match the records.
    const count = (s: string) => records.filter((x) => x.status === s).length;
    expect(summary).toMatchObject({
      files: records.length, patched: count("patched"), wouldPatch: count("would-patch"), unchanged: count("unchanged"),
      skipped: count("skipped"), failed: count("failed"),
      notElf: 4, // __init__.py, core.py, libfake.so, libhelper.a
    });
    expect(summary.patched + summary.wouldPatch + summary.unchanged + summary.skipped + summary.failed).toBe(summary.files);
    expect(summary.failed).toBe(1);
    expect(summary.skipped).toBe(2);
    expect(summary.bytesAdded).toBe(records.reduce((a, x) => a + x.bytesAdded, 0));
    expect(summary.bytesAdded).toBeGreaterThan(0); // the long directory made some files grow
    const strategies: Record<string, number> = {};
    for (const x of records) if (x.status === "patched" && x.strategy) strategies[x.strategy] = (strategies[x.strategy] ?? 0) + 1;
    expect(summary.strategies).toEqual(strategies);
    expect(summary.recovered).toEqual([]);
    expect(typeof summary.elapsedMs).toBe("number");
    // stderr: the human summary, no JSON.
    expect(r.stderr).toMatch(/^elfpatch: \d+ patched, .*\d+ failed/m);
    for (const line of r.stderr.split("\n")) expect(line.trimStart().startsWith("{"), line).toBe(false);
    // The patched extension still loads (through $ORIGIN/../pkg.libs).
    const dl = dlopenCheck(path.join(venv, EXT));
    expect(dl.ok, dl.message).toBe(true);
  });

  it("a broken ELF file fails with an ELF_* code, the batch goes on, its bytes are untouched", () => {
    const venv = freshVenv(true);
    const broken = path.join(venv, BROKEN);
    const before = sha256(broken);
    const beforeSt = fs.statSync(broken);
    for (const jobs of ["1", "2"]) {
      const r = cli(["patch", "--json", "-j", jobs, ...OPS, venv]);
      expect(r.status, r.stderr).toBe(1);
      const { records, summary } = parseNdjson(r.stdout);
      const b = byPath(records).get(broken)!;
      expect(b.status).toBe("failed");
      expect(b.changed).toBe(false);
      expect(b.error?.code).toMatch(/^ELF_/);
      expect(typeof b.error?.message).toBe("string");
      expect(summary.failed).toBe(1);
      expect(sha256(broken)).toBe(before);
      expect(fs.statSync(broken).ino).toBe(beforeSt.ino);
      expect(fs.statSync(broken).mtimeMs).toBe(beforeSt.mtimeMs);
      // The others went on (first run: patched; second: already done).
      expect(byPath(records).get(path.join(venv, EXT))!.status).toBe(jobs === "1" ? "patched" : "unchanged");
      expect(summary.patched + summary.unchanged).toBe(records.length - 3);
      // Without --json the failure goes to stderr as a human line.
    }
    const h = cli(["patch", "--no-progress", ...OPS, venv]);
    expect(h.status).toBe(1);
    expect(h.stderr).toContain(`${broken}: error ELF_`);
    expect(h.stdout).not.toContain("{");
  });

  it("--dry-run writes nothing and reports would-patch", () => {
    const venv = freshVenv(true);
    setOldTimes(venv);
    const before = snapshotTree(venv);
    const r = cli(["patch", "--dry-run", "--json", ...OPS, venv]);
    expect(r.status, r.stderr).toBe(1); // the broken file still fails
    expect(snapshotTree(venv)).toEqual(before);
    const { records, summary } = parseNdjson(r.stdout);
    const elf = records.filter((x) => x.status !== "skipped" && x.status !== "failed");
    expect(elf.length).toBe(systemLibs.length + 3);
    for (const x of elf) {
      expect(x.status, x.path).toBe("would-patch");
      expect(x.changed).toBe(true);
    }
    expect(summary.wouldPatch).toBe(elf.length);
    expect(summary.patched).toBe(0);
    // Without the broken file a dry run succeeds.
    const clean = freshVenv(false);
    const cleanBefore = snapshotTree(clean);
    const c = cli(["patch", "--dry-run", ...OPS, clean]);
    expect(c.status, c.stderr).toBe(0);
    expect(snapshotTree(clean)).toEqual(cleanBefore);
    expect(c.stdout).toMatch(/would patch/);
  });

  it("--check exits 1 when something would change, 0 on a patched tree; a second run changes nothing", () => {
    const venv = freshVenv(false);
    setOldTimes(venv);
    const pristine = snapshotTree(venv);
    const c1 = cli(["patch", "--check", "--json", ...OPS, venv]);
    expect(c1.status, c1.stderr).toBe(1);
    expect(snapshotTree(venv)).toEqual(pristine);
    expect(parseNdjson(c1.stdout).summary.wouldPatch).toBe(systemLibs.length + 3);

    const p1 = cli(["patch", "--json", ...OPS, venv]);
    expect(p1.status, p1.stderr).toBe(0);
    expect(parseNdjson(p1.stdout).summary.patched).toBe(systemLibs.length + 3);

    setOldTimes(venv);
    const patched = snapshotTree(venv);
    const c2 = cli(["patch", "--check", ...OPS, venv]);
    expect(c2.status, c2.stdout + c2.stderr).toBe(0);

    const p2 = cli(["patch", "--json", ...OPS, venv]);
    expect(p2.status, p2.stderr).toBe(0);
    const { records, summary } = parseNdjson(p2.stdout);
    for (const x of records) {
      if (x.status === "skipped") continue;
      expect(x.status, x.path).toBe("unchanged");
      expect(x.changed).toBe(false);
      expect(x.edits).toBe(0);
    }
    expect(summary).toMatchObject({ patched: 0, unchanged: systemLibs.length + 3, failed: 0, bytesAdded: 0, strategies: {} });
    // Bytes, inodes, modes and mtimes all identical: nothing was rewritten.
    expect(snapshotTree(venv)).toEqual(patched);
  });

  it.each([
    ["an unknown option", ["--frobnicate"]],
    ["--set-rpath with --remove-rpath", ["--set-rpath", "/x", "--remove-rpath"]],
    ["--jobs 0", ["--jobs", "0", ...OPS]],
    ["-j 0", ["-j", "0", ...OPS]],
    ["--jobs abc", ["--jobs", "abc", ...OPS]],
    ["--hardlinks with a bad mode", ["--hardlinks", "sometimes", ...OPS]],
    ["--replace-needed without =", ["--replace-needed", "libdep.so"]],
  ])("usage error: %s exits 2 and writes nothing", (_name, args) => {
    const venv = freshVenv(false);
    const before = snapshotTree(venv);
    const r = cli(["patch", ...args, venv]);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr.length).toBeGreaterThan(0);
    expect(snapshotTree(venv)).toEqual(before);
  });

  it("usage error: no PATH exits 2", () => {
    const r = cli(["patch", ...OPS]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
  });

  it("same input and options on fresh copies give byte-identical files and JSON, with -j 1 and -j 2", () => {
    const runs = [["-j", "2"], ["-j", "2"], ["-j", "1"]].map((jobs) => {
      const venv = freshVenv(true);
      const r = cli(["patch", "--json", ...jobs, ...OPS, venv]);
      expect(r.status, r.stderr).toBe(1);
      return { json: normalizeOutput(r.stdout, venv), content: contentOf(snapshotTree(venv)) };
    });
    expect(runs[0]!.content).not.toEqual(contentOf(snapshotTree(template))); // something did change
    for (const other of runs.slice(1)) {
      expect(other.content).toEqual(runs[0]!.content);
      expect(other.json).toEqual(runs[0]!.json);
    }
  });

  it("--include / --exclude with base-name globs: only matching ELF files are patched; non-ELF files get no record", () => {
    const venv = freshVenv(false);
    const before = snapshotTree(venv);
    const r = cli(["patch", "--json", "--include", "*.so", ...OPS, venv]);
    expect(r.status, r.stderr).toBe(0);
    const { records, summary } = parseNdjson(r.stdout);
    const rec = byPath(records);
    expect(records.filter((x) => x.status === "patched").map((x) => x.path)).toEqual([path.join(venv, EXT), path.join(venv, DEP)].sort());
    for (const p of [path.join(venv, "bin", "tool"), ...systemLibs.map((l) => path.join(venv, SITE, "pkg.libs", l))]) {
      expect(rec.get(p), p).toMatchObject({ status: "skipped", skipReason: "excluded" });
      expect(sha256(p)).toBe(before.get(path.relative(venv, p))!.hash);
    }
    // Records are for ELF files (and skipped symlinks), whatever the globs: not for .py files.
    expect(records.map((x) => x.path)).toEqual(expectedRecordPaths(venv, false));
    expect(summary.notElf).toBe(4);

    const v2 = freshVenv(false);
    const r2 = cli(["patch", "--json", "--exclude", "*.so*", ...OPS, v2]);
    expect(r2.status, r2.stderr).toBe(0);
    const out2 = parseNdjson(r2.stdout);
    expect(out2.records.filter((x) => x.status === "patched").map((x) => x.path)).toEqual([path.join(v2, "bin", "tool")]);
    expect(out2.records.map((x) => x.path)).toEqual(expectedRecordPaths(v2, false));
  });

  it("--include / --exclude with globs relative to the PATH", () => {
    const venv = freshVenv(false);
    const r = cli(["patch", "--json", "--include", `${SITE}/pkg/**`, ...OPS, venv]);
    expect(r.status, r.stderr).toBe(0);
    const patched = (out: string) => parseNdjson(out).records.filter((x) => x.status === "patched").map((x) => x.path);
    expect(patched(r.stdout)).toEqual([path.join(venv, EXT)]);

    const v2 = freshVenv(false);
    const r2 = cli(["patch", "--json", "--exclude", "lib/**", ...OPS, v2]);
    expect(r2.status, r2.stderr).toBe(0);
    expect(patched(r2.stdout)).toEqual([path.join(v2, "bin", "tool")]);
  });

  it("overlapping PATHs (a tree, a directory and a file inside it): each file once, nothing left behind", () => {
    const venv = freshVenv(false);
    const ext = path.join(venv, EXT);
    const names = [...snapshotTree(venv).keys()];
    const r = cli(["patch", "--json", ...OPS, venv, ext, path.join(venv, SITE)]);
    expect(r.status, r.stderr).toBe(0);
    const { records } = parseNdjson(r.stdout);
    const paths = records.map((x) => x.path);
    expect(paths).toEqual([...new Set(paths)]); // one record per path
    expect(paths).toEqual(expectedRecordPaths(venv, false));
    expect(byPath(records).get(ext)).toMatchObject({ status: "patched" });
    expect(byPath(records).get(ext)?.relinked ?? []).toEqual([]);
    expect([...snapshotTree(venv).keys()], "files left next to the patched ones").toEqual(names);
    expect(fs.statSync(ext).nlink).toBe(1);
  });

  it("file names up to NAME_MAX (255 bytes, ASCII and multibyte): patched in default mode through a shortened temp name, and in place", () => {
    const venv = freshVenv(false);
    const dir = path.dirname(path.join(venv, EXT));
    // 255 bytes each: no room for the temp file's prefix and suffix next to the whole name.
    const long = [`lib${"x".repeat(249)}.so`, `lib${"é".repeat(124)}x.so`];
    for (const n of long) expect(Buffer.byteLength(n)).toBe(255);
    for (const n of long) fs.copyFileSync(path.join(venv, EXT), path.join(dir, n));
    const before = [...snapshotTree(venv).keys()];
    const r = cli(["patch", "--json", ...OPS, venv]);
    expect(r.status, r.stderr).toBe(0);
    const { records, summary } = parseNdjson(r.stdout);
    expect(summary.failed).toBe(0);
    for (const n of long) {
      expect(byPath(records).get(path.join(dir, n)), n).toMatchObject({ status: "patched" });
      expect(dynStrings(readelfDynamic(path.join(dir, n)), "RUNPATH").join(":")).toContain(ADD_DIR);
    }
    expect([...snapshotTree(venv).keys()], "files left next to the patched ones").toEqual(before);
    const again = cli(["patch", "--json", "--in-place", "--set-rpath", "/opt/other", venv]);
    expect(again.status, again.stderr).toBe(0);
    for (const n of long) expect(dynStrings(readelfDynamic(path.join(dir, n)), "RUNPATH")).toEqual(["/opt/other"]);
  });

  it("special files: a FIFO or device named as a PATH is a skipped record (not-regular); one met in a tree, or a symlink to it, is ignored, without a hang", () => {
    const venv = freshVenv(false);
    const fifo = path.join(venv, SITE, "pkg", "pipe");
    execFileSync("mkfifo", [fifo]);
    fs.symlinkSync("pipe", path.join(venv, SITE, "pkg", "pipe-link"));
    const r = spawnSync(process.execPath, [CLI, "patch", "--json", ...OPS, fifo, "/dev/null", venv], { encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const { records, summary } = parseNdjson(r.stdout);
    const rec = byPath(records);
    expect(rec.get(fifo)).toMatchObject({ status: "skipped", skipReason: "not-regular" });
    expect(rec.get("/dev/null")).toMatchObject({ status: "skipped", skipReason: "not-regular" });
    expect(rec.has(path.join(venv, SITE, "pkg", "pipe-link"))).toBe(false);
    expect(rec.get(path.join(venv, EXT))).toMatchObject({ status: "patched" });
    expect(summary.failed).toBe(0);
  });

  it("--follow-symlinks patches the target of a symlink leading outside; the symlink stays a symlink", () => {
    const venv = freshVenv(false);
    fs.rmSync(path.join(venv, "bin", "python")); // never patch the system's python
    const outside = fs.mkdtempSync(path.join(work, "outside-"));
    const target = path.join(outside, "libshared.so");
    fs.copyFileSync(path.join(template, DEP), target);
    const old = sha256(target);
    const link = path.join(venv, SITE, "pkg.libs", "libshared.so");
    fs.symlinkSync(target, link);

    const r1 = cli(["patch", "--json", ...OPS, venv]);
    expect(r1.status, r1.stderr).toBe(0);
    expect(byPath(parseNdjson(r1.stdout).records).get(link)).toMatchObject({ status: "skipped", skipReason: "symlink-outside" });
    expect(sha256(target)).toBe(old);

    const r2 = cli(["patch", "--json", "--follow-symlinks", ...OPS, venv]);
    expect(r2.status, r2.stderr).toBe(0);
    const rec = byPath(parseNdjson(r2.stdout).records);
    expect(rec.get(target)?.status).toBe("patched");
    expect(sha256(target)).not.toBe(old);
    expect(readelfRunpath(target)).toBe(ADD_DIR);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(link)).toBe(target);
    expect(fs.readdirSync(outside)).toEqual(["libshared.so"]);
  });

  it("a read-only (0444) library of the user running elfpatch is patched in default mode (only its directory must be writable)", () => {
    const venv = freshVenv(false);
    const dep = path.join(venv, DEP);
    fs.chmodSync(dep, 0o444);
    let as: { uid: number; gid: number } | undefined;
    if (process.getuid?.() === 0) {
      // Run as an unprivileged user that owns the tree (root ignores file modes).
      as = { uid: 65534, gid: 65534 };
      for (const [rel] of snapshotTree(venv)) fs.lchownSync(path.join(venv, rel), as.uid, as.gid);
      fs.chownSync(venv, as.uid, as.gid);
      for (let d = path.dirname(venv); d.startsWith(work); d = path.dirname(d)) fs.chmodSync(d, 0o755);
    }
    const before = fs.statSync(dep);
    const r = cli(["patch", "--json", "--include", "libdep.so", ...OPS, venv], as);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(byPath(parseNdjson(r.stdout).records).get(dep)?.status).toBe("patched");
    const after = fs.statSync(dep);
    expect((after.mode & 0o7777).toString(8)).toBe("444");
    expect([after.uid, after.gid]).toEqual([before.uid, before.gid]);
    expect(readelfRunpath(dep)).toBe(ADD_DIR);
  });

  describe("uv-style hard links", () => {
    /** venv/.../_ext.so and a second in-batch link, both hard links of a file in a cache dir. */
    function linkedTree(): { venv: string; cached: string; a: string; b: string; old: string } {
      const venv = freshVenv(false);
      const cacheDir = fs.mkdtempSync(path.join(work, "uv-cache-"));
      const cached = path.join(cacheDir, "archive-v0", "abc123", "_ext.so");
      fs.mkdirSync(path.dirname(cached), { recursive: true });
      const a = path.join(venv, EXT);
      fs.renameSync(a, cached);
      fs.linkSync(cached, a);
      const b = path.join(venv, SITE, "pkg", "_ext_copy.so");
      fs.linkSync(cached, b);
      expect(fs.statSync(cached).nlink).toBe(3);
      return { venv, cached, a, b, old: sha256(cached) };
    }

    it("default mode: the venv links get the new version (one inode), the cache keeps the old bytes", () => {
      const t = linkedTree();
      const cacheIno = fs.statSync(t.cached).ino;
      const r = cli(["patch", "--json", ...OPS, t.venv]);
      expect(r.status, r.stderr).toBe(0);
      const rec = byPath(parseNdjson(r.stdout).records);
      expect(rec.get(t.a)).toMatchObject({ status: "patched", relinked: [t.b] });
      expect(rec.get(t.b)).toMatchObject({ status: "skipped", skipReason: "duplicate", duplicateOf: t.a });
      expect(sha256(t.cached)).toBe(t.old);
      expect(fs.statSync(t.cached).ino).toBe(cacheIno);
      expect(fs.statSync(t.cached).nlink).toBe(1);
      const sa = fs.statSync(t.a);
      const sb = fs.statSync(t.b);
      expect(sha256(t.a)).not.toBe(t.old);
      expect(sha256(t.b)).toBe(sha256(t.a));
      expect(sa.ino).not.toBe(cacheIno);
      expect(sb.ino).toBe(sa.ino);
      expect(sa.nlink).toBe(2);
      expect(readelfRunpath(t.b)).toBe(`$ORIGIN/../pkg.libs:${ADD_DIR}`);
      // A second run is a no-op for the pair.
      const r2 = cli(["patch", "--json", ...OPS, t.venv]);
      expect(byPath(parseNdjson(r2.stdout).records).get(t.a)?.status).toBe("unchanged");
      expect(fs.statSync(t.a).ino).toBe(sa.ino);
    });

    it("--hardlinks preserve: the shared inode is edited (the cache copy changes too)", () => {
      const t = linkedTree();
      const ino = fs.statSync(t.cached).ino;
      const r = cli(["patch", "--json", "--hardlinks", "preserve", ...OPS, t.venv]);
      expect(r.status, r.stderr).toBe(0);
      expect(byPath(parseNdjson(r.stdout).records).get(t.a)?.status).toBe("patched");
      for (const p of [t.cached, t.a, t.b]) {
        expect(fs.statSync(p).ino, p).toBe(ino);
        expect(fs.statSync(p).nlink).toBe(3);
      }
      const h = sha256(t.a);
      expect(h).not.toBe(t.old);
      expect(sha256(t.cached)).toBe(h);
      expect(readelfRunpath(t.cached)).toBe(`$ORIGIN/../pkg.libs:${ADD_DIR}`);
      // No journal or temp file left next to the file.
      expect(fs.readdirSync(path.dirname(t.a)).filter((n) => n.includes("elfpatch"))).toEqual([]);
    });

    it("--in-place (with the default --hardlinks break) leaves the cache copy alone too", () => {
      const t = linkedTree();
      const r = cli(["patch", "--json", "--in-place", ...OPS, t.venv]);
      expect(r.status, r.stderr).toBe(0);
      expect(byPath(parseNdjson(r.stdout).records).get(t.a)?.status).toBe("patched");
      expect(sha256(t.cached), "--in-place wrote through a hard link into the cache").toBe(t.old);
      expect(sha256(t.a)).not.toBe(t.old);
      expect(sha256(t.b)).toBe(sha256(t.a));
    });
  });

  it("a process that has the old library mapped keeps working after a default-mode patch", async () => {
    const venv = freshVenv(false);
    const lib = path.join(venv, EXT);
    const src = path.join(work, `hold-${++cCounter}.c`);
    const exe = src.replace(/\.c$/, "");
    fs.writeFileSync(
      src,
      `#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
  void *h = dlopen(argv[1], RTLD_NOW);
  if (!h) { fprintf(stderr, "dlopen: %s\\n", dlerror()); return 10; }
  int (*f)(void) = (int (*)(void))dlsym(h, "main_value");
  if (!f) { fprintf(stderr, "dlsym: %s\\n", dlerror()); return 11; }
  printf("ready\\n");
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) return 12;
  printf("value %d\\n", f());
  fflush(stdout);
  return dlclose(h) == 0 ? 0 : 13;
}
`,
    );
    gcc(["-O1", "-o", exe, src, "-ldl"]);
    const child = spawn(exe, [lib], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((res) => child.on("exit", (code, sig) => res(sig ? -1 : code)));
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`the program did not get ready: ${out} ${err}`)), 20_000);
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("ready\n")) {
          clearTimeout(timer);
          res();
        }
      });
      child.on("exit", () => rej(new Error(`the program exited early: ${out} ${err}`)));
    });
    try {
      const mapsBefore = fs.readFileSync(`/proc/${child.pid}/maps`, "utf8");
      expect(mapsBefore).toContain(lib);
      // The long directory makes the extension grow (a new segment at the end of the file).
      const r = cli(["patch", "--json", ...OPS, venv]);
      expect(r.status, r.stderr).toBe(0);
      const rec = byPath(parseNdjson(r.stdout).records).get(lib)!;
      expect(rec.status).toBe("patched");
      // The process still maps the old inode, now unlinked: the new file is a different one.
      const mapsAfter = fs.readFileSync(`/proc/${child.pid}/maps`, "utf8").split("\n").filter((l) => l.includes(lib));
      expect(mapsAfter.length).toBeGreaterThan(0);
      for (const l of mapsAfter) expect(l).toMatch(/ \(deleted\)$/);
      child.stdin.write("go\n");
      child.stdin.end();
      const code = await exited;
      expect(err).toBe("");
      expect(out).toBe("ready\nvalue 43\n");
      expect(code).toBe(0);
    } finally {
      child.kill("SIGKILL");
    }
    // And a new process loads the new file.
    const dl = dlopenCheck(lib);
    expect(dl.ok, dl.message).toBe(true);
  });

  it("mode, owner and group are kept by a default-mode patch (setuid/setgid bits too)", () => {
    const venv = freshVenv(false);
    const root = process.getuid?.() === 0;
    const cases: { rel: string; mode: number; uid?: number; gid?: number }[] = [
      { rel: EXT, mode: 0o750, ...(root ? { uid: 12345, gid: 54321 } : {}) },
      { rel: DEP, mode: 0o640 },
      { rel: `${SITE}/pkg.libs/${systemLibs[0]}`, mode: 0o444 },
      { rel: "bin/tool", mode: 0o4755, ...(root ? { uid: 23456, gid: 0 } : {}) },
      { rel: `${SITE}/pkg.libs/${systemLibs[1]}`, mode: 0o2750, ...(root ? { uid: 0, gid: 34567 } : {}) },
    ];
    for (const c of cases) {
      const p = path.join(venv, c.rel);
      if (c.uid !== undefined) fs.chownSync(p, c.uid, c.gid!);
      fs.chmodSync(p, c.mode);
    }
    const before = new Map(cases.map((c) => [c.rel, fs.statSync(path.join(venv, c.rel))]));
    const r = cli(["patch", "--json", ...OPS, venv]);
    expect(r.status, r.stderr).toBe(0);
    const rec = byPath(parseNdjson(r.stdout).records);
    for (const c of cases) {
      const p = path.join(venv, c.rel);
      expect(rec.get(p)?.status, c.rel).toBe("patched");
      const b = before.get(c.rel)!;
      const a = fs.statSync(p);
      expect(a.ino, `${c.rel} was replaced by a new file`).not.toBe(b.ino);
      expect((a.mode & 0o7777).toString(8), `${c.rel} mode`).toBe((c.mode & 0o7777).toString(8));
      expect(a.uid, `${c.rel} owner`).toBe(b.uid);
      expect(a.gid, `${c.rel} group`).toBe(b.gid);
    }
  });
});
