/**
 * `npm run sweep`: elfpatch against the ELF files of this machine that no test was written for
 * (other toolchains' outputs: Rust, Go, the JDK, LLVM, pyenv's Pythons, distribution executables),
 * with the loader and the linters as the oracle. Not a test (what it finds depends on the machine)
 * and not a benchmark; a check to run on a new distribution or toolchain.
 *
 * Corpus: every regular ELF file (by magic; each inode once) under --dirs (default: the usual
 * system and toolchain directories that exist here), copied under $TMPDIR/elfpatch-sweep/orig, up
 * to --max-mb. Recipes, each on a fresh copy:
 *   1. the seed recipe without the prefix filter (`--force-rpath --add-rpath PROFILE/lib
 *      --shrink-rpath`; PROFILE is a dir of symlinks to the system libraries), so every library a
 *      file found before must still be found;
 *   2. the same `--in-place`, which must give byte-identical files;
 *   3. `--add-needed libz.so.1 --set-rpath '$ORIGIN/../lib:/opt/elfpatch-sweep/lib'`, after
 *      which every changed file the loader could list before must list libz.
 * For every changed file: `readelf -W -a` and `eu-elflint --gnu-ld` must not complain about
 * anything they did not complain about before (program header indices ignored: a file that gains
 * a segment renumbers them), `ld.so --list` must succeed where it did and find what it found;
 * the re-run of each recipe must change nothing. Exit status 1 if anything fails.
 *
 * Options: --dirs A:B:... , --max-mb N (default 4000), --keep (keep the copies).
 */
import { execFile, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { availableParallelism, homedir, tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { promisify } from "node:util";
import { isElf } from "../scan/walk.js";

const run = promisify(execFile);
const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const DEFAULT_DIRS = [
  "/usr/bin", "/usr/sbin", "/usr/libexec", "/usr/lib", "/usr/local", "/opt",
  join(homedir(), ".pyenv", "versions"), join(homedir(), ".rustup", "toolchains"),
];
const dirs = (opt("--dirs")?.split(":") ?? DEFAULT_DIRS).filter((d) => existsSync(d));
const maxBytes = Number(opt("--max-mb") ?? 4000) * 1e6;
const root = join(tmpdir(), "elfpatch-sweep");
const orig = join(root, "orig");
const profile = join(root, "profile", "lib");
const cli = join(__dirname, "..", "cli", "main.js");
const HOST_LIBS = "/usr/lib/x86_64-linux-gnu";
const LDSO = "/lib64/ld-linux-x86-64.so.2";

/** Copies every ELF file under `dirs` (each inode once, up to maxBytes) into `orig`. */
function buildCorpus(): { files: number; bytes: number } {
  rmSync(root, { recursive: true, force: true });
  const seen = new Set<string>();
  let files = 0;
  let bytes = 0;
  const walk = (base: string, d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(base, p);
      else if (e.isFile()) {
        try {
          const st = lstatSync(p);
          const key = `${st.dev}:${st.ino}`;
          if (st.size < 64 || seen.has(key) || bytes + st.size > maxBytes || !isElf(p)) continue;
          seen.add(key);
          const dst = join(orig, base.replace(/^\//, "").replaceAll("/", "_"), relative(base, p));
          mkdirSync(dirname(dst), { recursive: true });
          copyFileSync(p, dst);
          files++;
          bytes += st.size;
        } catch {
          // unreadable: not part of the sweep
        }
      }
    }
  };
  for (const d of dirs) walk(d, d);
  mkdirSync(profile, { recursive: true });
  for (const e of readdirSync(HOST_LIBS)) symlinkSync(join(HOST_LIBS, e), join(profile, e));
  return { files, bytes };
}

interface FileRecord {
  type: string;
  path: string;
  status: string;
  changed?: boolean;
  error?: { code: string; message: string };
}

/** Runs elfpatch on a fresh copy of the corpus; returns its records and the re-run's summary. */
function patchCopy(name: string, recipe: string[]): { dir: string; records: FileRecord[]; rerunPatched: number; failed: FileRecord[] } {
  const dir = join(root, name);
  rmSync(dir, { recursive: true, force: true });
  spawnSync("cp", ["-a", orig, dir]);
  const first = spawnSync("node", [cli, "patch", ...recipe, "--no-cache", "--no-progress", "--json", "--no-resolve", dir], {
    encoding: "utf8", maxBuffer: 1 << 30,
  });
  const records = first.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as FileRecord);
  const again = spawnSync("node", [cli, "patch", ...recipe, "--no-cache", "--no-progress", "--json", "--no-resolve", dir], {
    encoding: "utf8", maxBuffer: 1 << 30,
  });
  const summary = JSON.parse(again.stdout.trim().split("\n").at(-1) ?? "{}") as { patched?: number };
  return {
    dir, records: records.filter((r) => r.type === "file"), rerunPatched: summary.patched ?? -1,
    failed: records.filter((r) => r.type === "file" && r.status === "failed"),
  };
}

async function out(cmd: string, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(cmd, argv, { maxBuffer: 1 << 28, timeout: 120_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/**
 * A tool's complaints about `path`, counted by line, with the path, program header indices and
 * dynamic entry indices left out: a file that gains a segment renumbers its program headers, and
 * one that gains a `DT_NEEDED` entry (added first, as patchelf does) renumbers its dynamic entries,
 * so eu-elflint's complaints about MIPS's processor-specific tags move by one.
 */
function complaints(text: string, path: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const l of text.split("\n")) {
    if (!l) continue;
    const key = l.replaceAll(path, "FILE").replace(/phdr\[\s*\d+\]/g, "phdr[N]")
      .replace(/program header entry \d+/g, "program header entry N").replace(/('\.dynamic': entry) \d+/g, "$1 N");
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Complaints `after` has more often than `before`. */
const newOnes = (before: Map<string, number>, after: Map<string, number>): string[] =>
  [...after].filter(([l, n]) => n > (before.get(l) ?? 0)).map(([l]) => l);

/** What `ld.so --list` says: whether it succeeded, and the names it could not find. */
async function loaderView(path: string): Promise<{ ok: boolean; found: Set<string>; missing: Set<string> }> {
  const r = await out(LDSO, ["--list", path]);
  const found = new Set<string>();
  const missing = new Set<string>();
  for (const line of r.stdout.split("\n")) {
    const m = /^\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (!m) continue;
    if (m[2] === "not found") missing.add(m[1]!);
    else found.add(m[1]!);
  }
  return { ok: r.code === 0, found, missing };
}

interface Problem {
  path: string;
  what: string;
}

async function checkFile(before: string, after: string, mustNeed: string | null): Promise<Problem[]> {
  const problems: Problem[] = [];
  const [r1, r2, l1, l2, v1, v2] = await Promise.all([
    out("readelf", ["-W", "-a", before]), out("readelf", ["-W", "-a", after]),
    out("eu-elflint", ["--gnu-ld", "-q", before]), out("eu-elflint", ["--gnu-ld", "-q", after]),
    loaderView(before), loaderView(after),
  ]);
  for (const l of newOnes(complaints(r1.stderr, before), complaints(r2.stderr, after))) problems.push({ path: after, what: `readelf: ${l}` });
  for (const l of newOnes(complaints(l1.stdout + l1.stderr, before), complaints(l2.stdout + l2.stderr, after))) {
    problems.push({ path: after, what: `eu-elflint: ${l}` });
  }
  if (mustNeed === null) {
    if (v1.ok && !v2.ok) problems.push({ path: after, what: "ld.so --list failed after the patch" });
    for (const n of v1.found) if (v2.missing.has(n)) problems.push({ path: after, what: `ld.so: ${n} no longer found` });
  } else if (v1.ok && v2.ok && !v2.found.has(mustNeed) && !r2.stdout.includes(`Library soname: [${mustNeed}]`)) {
    // (A library that is `mustNeed` itself satisfies its new NEEDED entry by its SONAME.)
    problems.push({ path: after, what: `ld.so: ${mustNeed} not loaded after --add-needed` });
  }
  return problems;
}

async function checkAll(pairs: [string, string][], mustNeed: string | null): Promise<Problem[]> {
  const problems: Problem[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    for (let i = next++; i < pairs.length; i = next++) problems.push(...(await checkFile(pairs[i]![0], pairs[i]![1], mustNeed)));
  };
  await Promise.all(Array.from({ length: availableParallelism() * 2 }, lane));
  return problems;
}

function sameBytes(a: string, b: string): boolean {
  return readFileSync(a).equals(readFileSync(b));
}

async function main(): Promise<void> {
  for (const tool of ["readelf", "eu-elflint", LDSO]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is needed (apt-get install binutils elfutils)`);
  }
  process.stderr.write(`copying the ELF files of ${dirs.join(", ")} to ${orig}\n`);
  const corpus = buildCorpus();
  process.stderr.write(`corpus: ${corpus.files} ELF files, ${(corpus.bytes / 1e6).toFixed(0)} MB\n`);
  const lines: string[] = [`Corpus: ${corpus.files} ELF files, ${(corpus.bytes / 1e6).toFixed(0)} MB, from ${dirs.join(", ")}`];
  let bad = 0;
  const seed = ["--force-rpath", "--add-rpath", profile, "--shrink-rpath"];
  const needed = ["--add-needed", "libz.so.1", "--set-rpath", "$ORIGIN/../lib:/opt/elfpatch-sweep/lib"];
  const recipes: [string, string[], string | null][] = [["seed", seed, null], ["needed", needed, "libz.so.1"]];
  for (const [name, recipe, mustNeed] of recipes) {
    const r = patchCopy(name, recipe);
    const changed = r.records.filter((x) => x.changed === true);
    const count = (s: string): number => r.records.filter((x) => x.status === s).length;
    process.stderr.write(`${name}: ${changed.length} changed; checking them\n`);
    const problems = await checkAll(changed.map((x) => [join(orig, relative(r.dir, x.path)), x.path]), mustNeed);
    lines.push(
      `recipe ${name} (${recipe.join(" ")}): ${count("patched")} patched, ${count("unchanged")} unchanged, ` +
        `${count("skipped")} skipped, ${r.failed.length} failed; re-run patched ${r.rerunPatched}; ` +
        `${problems.length} new complaints over ${changed.length} changed files`,
    );
    for (const f of r.failed) lines.push(`  failed: ${f.path}: ${f.error?.code} ${f.error?.message}`);
    for (const p of problems) lines.push(`  ${p.path}: ${p.what}`);
    bad += r.failed.length + problems.length + (r.rerunPatched === 0 ? 0 : 1);
    if (name === "seed") {
      const inPlace = patchCopy("seed-in-place", [...recipe, "--in-place"]);
      const differ = r.records.filter((x) => !sameBytes(x.path, join(inPlace.dir, relative(r.dir, x.path))));
      lines.push(`recipe seed --in-place: ${differ.length} files differ from the default mode's; re-run patched ${inPlace.rerunPatched}`);
      for (const d of differ) lines.push(`  differs: ${d.path}`);
      bad += differ.length + (inPlace.rerunPatched === 0 ? 0 : 1);
      rmSync(inPlace.dir, { recursive: true, force: true });
    }
    if (!args.includes("--keep")) rmSync(r.dir, { recursive: true, force: true });
  }
  console.log(lines.join("\n"));
  if (!args.includes("--keep")) rmSync(root, { recursive: true, force: true });
  process.exitCode = bad > 0 ? 1 : 0;
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
