/**
 * `npm run bench`: elfpatch against patchelf on the same job, side by side, in one run.
 *
 * Corpus: several venv-like trees, each holding copies of every ELF file of
 * /usr/lib/x86_64-linux-gnu (under lib/) and of the local Python's site-packages (under
 * site-packages/, layout kept), built once under the temp dir. Job: the seed recipe — force
 * DT_RPATH, add the Nix profile's lib dir, shrink to `$ORIGIN` and the profile. The profile is a
 * temp dir of symlinks to the system libraries, so it really provides NEEDED libraries and both
 * tools keep it (a profile that provides nothing would be shrunk away and leave nothing to do).
 * Each tool runs on a fresh copy: elfpatch (default mode, and --in-place) in one process, run as
 * users run it (the `elfpatch` command, build/bin/elfpatch),
 * patchelf (Debian's) with two calls per file through `xargs -P nproc`, as the seed does; then a
 * re-run on the patched tree. elfpatch's result cache (in a fresh temp dir per repetition) records
 * answers only for files that had settled for SETTLE_MS before a run started, so the first re-run
 * starts after that pause: it checks every file and records the cache; a second re-run is
 * answered from it (what a nightly run over an unchanged tree costs). Wall time and peak RSS come
 * from GNU time; medians of --reps runs.
 *
 * Options: --trees N (default 3), --reps N (default 3), --keep (keep the corpus for the next run),
 * --many N (also: peak RSS and wall time of elfpatch alone on a tree of many more files: N copies
 * of the first venv's ELF files under 2 MB, plus that whole venv with its big libraries).
 */
import { execFileSync, spawnSync } from "node:child_process";
import {
  cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync,
} from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { SETTLE_MS } from "../batch/cache.js";
import { isElf } from "../scan/walk.js";

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const TREES = opt("--trees", 3);
const REPS = opt("--reps", 3);
const KEEP = args.includes("--keep");
const MANY = opt("--many", 0);
const HOST = "/usr/lib/x86_64-linux-gnu";
const root = join(tmpdir(), "elfpatch-bench");
const base = join(root, `base-${TREES}`);
const work = join(root, "work");
const profileRoot = join(root, "nix", "var", "nix", "profiles", "per-user", "alice", "profile");
const profile = join(profileRoot, "lib");
/** The `elfpatch` command as installed (package.json "bin"): the launcher in build/bin. */
const cli = join(__dirname, "..", "..", "bin", "elfpatch");

/** Regular ELF files under `dir` (no symlinks), recursively. */
function elfFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && statSync(p).size > 64 && isElf(p)) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

function sitePackages(): string | null {
  try {
    return execFileSync("python3", ["-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"], { encoding: "utf8" }).trim();
  } catch {
    return null;
  }
}

function buildCorpus(): { files: number; bytes: number } {
  if (!existsSync(join(base, ".done"))) {
    rmSync(base, { recursive: true, force: true });
    const sp = sitePackages();
    const sources: [string, string][] = [[HOST, "lib"], ...(sp && existsSync(sp) ? [[sp, "site-packages"] as [string, string]] : [])];
    for (let t = 1; t <= TREES; t++) {
      for (const [src, name] of sources) {
        for (const f of elfFiles(src)) {
          const dst = join(base, `venv-${t}`, name, relative(src, f));
          mkdirSync(dirname(dst), { recursive: true });
          cpSync(f, dst);
        }
      }
    }
    writeFileSync(join(base, ".done"), "");
  }
  if (!existsSync(profile)) {
    mkdirSync(profile, { recursive: true });
    for (const e of readdirSync(HOST)) symlinkSync(join(HOST, e), join(profile, e));
  }
  const files = elfFiles(base);
  return { files: files.length, bytes: files.reduce((s, f) => s + statSync(f).size, 0) };
}

function treeBytes(dir: string): number {
  let n = 0;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) n += statSync(p).size;
    }
  };
  walk(dir);
  return n;
}

/** A fresh copy of the corpus `from` at `to`, on disk. */
function fresh(from = base, to = work): void {
  rmSync(to, { recursive: true, force: true });
  execFileSync("cp", ["-a", "--reflink=auto", from, to]);
  rmSync(join(to, ".done"), { force: true });
  execFileSync("sync");
}

/** The environment of a run with a fresh, empty result cache. */
function freshCacheEnv(): NodeJS.ProcessEnv {
  const cacheDir = join(root, "cache");
  rmSync(cacheDir, { recursive: true, force: true });
  return { ...process.env, ELFPATCH_CACHE_DIR: cacheDir };
}

interface Timing {
  wallS: number;
  rssMB: number;
  status: number;
}

const sleep = (ms: number): void => void spawnSync("sleep", [String(ms / 1000)]);

/**
 * Runs a command under GNU time: wall seconds from this process's clock around the run (GNU time
 * prints centiseconds, too coarse for a 0.13 s re-run) and peak RSS from GNU time (largest process
 * of the tree).
 */
function timed(cmd: string[], env: NodeJS.ProcessEnv = process.env): Timing {
  const t0 = performance.now();
  const r = spawnSync("/usr/bin/time", ["-v", ...cmd], { encoding: "utf8", maxBuffer: 1 << 28, env });
  const wallS = (performance.now() - t0) / 1000;
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr ?? "");
  return { wallS, rssMB: rss ? Number(rss[1]) / 1024 : NaN, status: r.status ?? -1 };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const recipe = ["--force-rpath", "--add-rpath", profile, "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${profileRoot}`];
const elfpatch = (extra: readonly string[], tree = work): string[] => [cli, "patch", ...recipe, ...extra, "--no-progress", tree];
const jobs = String(availableParallelism());
const patchelfScript =
  `find "${work}" -type f -print0 | xargs -0 -P ${jobs} -n 1 sh -c ` +
  `'patchelf --force-rpath --add-rpath "${profile}" "$0" && ` +
  `patchelf --force-rpath --shrink-rpath --allowed-rpath-prefixes "\\$ORIGIN:${profileRoot}" "$0"'`;
const patchelf = ["sh", "-c", patchelfScript];

interface Row {
  name: string;
  first: Timing[];
  rerun: Timing[];
  /** elfpatch: the re-run after the cache was recorded. */
  cached: Timing[];
  added: number[];
  rerunAdded: number[];
}

function measure(name: string, cmd: string[], withCache: boolean): Row {
  const row: Row = { name, first: [], rerun: [], cached: [], added: [], rerunAdded: [] };
  for (let i = 0; i < REPS; i++) {
    fresh();
    const env = freshCacheEnv();
    const b0 = treeBytes(work);
    row.first.push(timed(cmd, env));
    const b1 = treeBytes(work);
    if (withCache) sleep(SETTLE_MS + 500); // so that the re-run may record its answers
    row.rerun.push(timed(cmd, env));
    row.added.push(b1 - b0);
    const b2 = treeBytes(work);
    row.rerunAdded.push(b2 - b1);
    if (withCache) {
      row.cached.push(timed(cmd, env));
      if (treeBytes(work) !== b2) throw new Error(`${name}: the cached re-run changed the tree`);
    }
    const c = row.cached.at(-1);
    process.stderr.write(
      `  ${name} rep ${i + 1}: ${row.first.at(-1)!.wallS.toFixed(2)} s, re-run ${row.rerun.at(-1)!.wallS.toFixed(3)} s` +
        (c ? `, cached re-run ${c.wallS.toFixed(3)} s` : "") + "\n",
    );
  }
  rmSync(join(root, "cache"), { recursive: true, force: true });
  return row;
}

/**
 * The resolution report over the same corpus (a fresh, unpatched copy): `elfpatch check` in one
 * process, next to Debian's lddtree (pax-utils) and libtree run per file through xargs.
 */
function measureCheck(files: number): string[] {
  fresh();
  const rows: [string, string[]][] = [["elfpatch check --json", ["sh", "-c", `"${cli}" check --json "${work}" > /dev/null`]]];
  for (const [tool, args] of [["lddtree", "-l"], ["libtree", ""]] as const) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0) {
      rows.push([`${tool} (per file, xargs -P ${jobs})`, ["sh", "-c",
        `find "${work}" -type f -print0 | xargs -0 -P ${jobs} -n 16 ${tool} ${args} > /dev/null 2>&1; true`]]);
    }
  }
  const out = [
    `Resolution report over the same ${files} files (fresh copy), medians of ${REPS} runs:`,
    "",
    "| tool | wall (s) | per file (ms) | peak RSS (MB) |",
    "|---|---|---|---|",
  ];
  for (const [name, cmd] of rows) {
    const t = Array.from({ length: REPS }, () => timed(cmd));
    const w = median(t.map((x) => x.wallS));
    out.push(`| ${name} | ${w.toFixed(2)} | ${((w * 1000) / files).toFixed(3)} | ${Math.max(...t.map((x) => x.rssMB)).toFixed(0)} |`);
    process.stderr.write(`  ${name}: ${w.toFixed(2)} s\n`);
  }
  return out;
}

/**
 * The default mode's floor here: every file of a fresh copy copied next to itself and renamed
 * over the original by as many threads as elfpatch uses, with no ELF work (bench/floor.ts).
 */
function measureFloor(): string[] {
  const floor = join(__dirname, "floor.js");
  const ms: number[] = [];
  for (let i = 0; i < REPS; i++) {
    fresh();
    const r = spawnSync("node", [floor, work, jobs], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`floor.js failed: ${r.stderr}`);
    ms.push(Number(r.stdout.trim()));
  }
  process.stderr.write(`  floor: ${ms.map((m) => (m / 1000).toFixed(2)).join(", ")} s\n`);
  return [
    `Floor of the default mode: copy + rename of every file (${jobs} threads, kernel copy, no ELF work, no sync): ` +
      `${(median(ms) / 1000).toFixed(2)} s (median of ${REPS}).`,
  ];
}

/** Files under this size are copied MANY times into the many-files tree. */
const MANY_SMALL = 2 * 1024 * 1024;

/**
 * Memory against the number of files (--many N): elfpatch in both modes on fresh copies of a tree
 * of N copies of the first venv's small ELF files plus that whole venv (its 100+ MB libraries
 * too), next to the same runs on the bench corpus in the table above.
 */
function measureMany(): string[] {
  const dir = join(root, `many-${MANY}`);
  const venv = join(base, "venv-1");
  if (!existsSync(join(dir, ".done"))) {
    rmSync(dir, { recursive: true, force: true });
    const small = elfFiles(venv).filter((f) => statSync(f).size < MANY_SMALL);
    for (let c = 1; c <= MANY; c++) {
      for (const f of small) {
        const dst = join(dir, `copy-${c}`, relative(venv, f));
        mkdirSync(dirname(dst), { recursive: true });
        cpSync(f, dst);
      }
    }
    execFileSync("cp", ["-a", venv, join(dir, "whole")]);
    writeFileSync(join(dir, ".done"), "");
  }
  const files = elfFiles(dir);
  const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
  const manyWork = join(root, "many-work");
  const out = [
    `Many files (--many ${MANY}): ${files.length} ELF files, ${(bytes / 1e6).toFixed(0)} MB (${MANY} copies of venv-1's ELF files under 2 MB, plus all of venv-1); medians of ${REPS} runs on fresh copies:`,
    "",
    "| tool | first run (s) | peak RSS (MB) |",
    "|---|---|---|",
  ];
  for (const [name, extra] of [["elfpatch", []], ["elfpatch --in-place", ["--in-place"]]] as const) {
    const t: Timing[] = [];
    for (let i = 0; i < REPS; i++) {
      fresh(dir, manyWork);
      t.push(timed(elfpatch(extra, manyWork), freshCacheEnv()));
    }
    const bad = t.filter((x) => x.status !== 0).length;
    const w = median(t.map((x) => x.wallS));
    out.push(`| ${name} | ${w.toFixed(2)} | ${Math.max(...t.map((x) => x.rssMB)).toFixed(0)} |` + (bad ? ` (${bad} runs exited non-zero)` : ""));
    process.stderr.write(`  many files, ${name}: ${t.map((x) => `${x.wallS.toFixed(2)} s ${x.rssMB.toFixed(0)} MB`).join(", ")}\n`);
  }
  rmSync(manyWork, { recursive: true, force: true });
  rmSync(join(root, "cache"), { recursive: true, force: true });
  return out;
}

function main(): void {
  if (!existsSync("/usr/bin/time")) throw new Error("GNU time is needed: apt-get install time");
  const patchelfVersion = spawnSync("patchelf", ["--version"], { encoding: "utf8" }).stdout?.trim() || "missing";
  process.stderr.write(`building corpus (${TREES} trees) in ${root}\n`);
  const corpus = buildCorpus();
  process.stderr.write(`corpus: ${corpus.files} ELF files, ${(corpus.bytes / 1e6).toFixed(0)} MB\n`);
  const rows = [measure("elfpatch", elfpatch([]), true), measure("elfpatch --in-place", elfpatch(["--in-place"]), true)];
  if (patchelfVersion !== "missing") rows.push(measure(`patchelf (${patchelfVersion.replace("patchelf ", "")})`, patchelf, false));
  const ref = rows.find((r) => r.name.startsWith("patchelf"));
  const refWall = ref ? median(ref.first.map((t) => t.wallS)) : NaN;
  // A re-run is compared with patchelf's re-run (the same job on its own patched tree).
  const refRerun = ref ? median(ref.rerun.map((t) => t.wallS)) : NaN;
  const lines = [
    `Corpus: ${corpus.files} ELF files, ${(corpus.bytes / 1e6).toFixed(0)} MB (${TREES} venv-like trees); ${jobs} cores; medians of ${REPS} runs;`,
    "first runs against patchelf's first run, re-runs against patchelf's re-run.",
    "",
    "| tool | first run (s) | vs patchelf | peak RSS (MB) | bytes added | re-run (s) | vs patchelf's re-run | re-run bytes added | cached re-run (s) | vs patchelf's re-run |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const w = median(r.first.map((t) => t.wallS));
    const rr = median(r.rerun.map((t) => t.wallS));
    const rss = Math.max(...r.first.map((t) => t.rssMB), ...r.rerun.map((t) => t.rssMB), ...r.cached.map((t) => t.rssMB));
    const cr = r.cached.length ? median(r.cached.map((t) => t.wallS)) : NaN;
    lines.push(
      `| ${r.name} | ${w.toFixed(2)} | ${(refWall / w).toFixed(1)}x | ${rss.toFixed(0)} | ${median(r.added).toLocaleString("en")} | ` +
        `${rr.toFixed(3)} | ${(refRerun / rr).toFixed(0)}x | ${median(r.rerunAdded).toLocaleString("en")} | ` +
        (r.cached.length ? `${cr.toFixed(3)} | ${(refRerun / cr).toFixed(0)}x |` : "n/a | |"),
    );
    const bad = [...r.first, ...r.rerun, ...r.cached].filter((t) => t.status !== 0).length;
    if (bad) lines.push(`| ${r.name}: ${bad} runs exited non-zero | | | | | | | | | |`);
  }
  lines.push("", ...measureFloor(), "", ...measureCheck(corpus.files));
  if (MANY > 0) lines.push("", ...measureMany());
  console.log(lines.join("\n"));
  if (!KEEP) rmSync(root, { recursive: true, force: true });
  else rmSync(work, { recursive: true, force: true });
}

main();
