/**
 * Other glibc releases than this machine's: Debian bullseye (glibc 2.31) and trixie (glibc 2.41),
 * installed whole by test/corpus/build-corpus.sh (debootstrap; test/corpus/releases.txt), each with
 * its own loader, libraries, ld.so.cache (written by its own ldconfig) and Python. The oracle is
 * each release's own loader, run inside its root (chroot):
 * 1. every ELF file of the release (libraries, programs, Python's extension modules) resolves
 *    under `--root` as that loader's `ld.so --list` lists it there;
 * 2. `$LIB` and hwcaps subdirectories: what a loader expands `$LIB` to and the subdirectories it
 *    searches in a run-path directory (`LD_DEBUG=libs`, "search path=") are the resolver's, for this machine's loader, Debian's
 *    i386 loader and the releases' loaders (glibc 2.31: legacy ones only, 2.41: glibc-hwcaps
 *    only); a library placed in subdirectories that one release searches and another does not
 *    resolves where each loader finds it;
 * 3. the seed recipe run inside each release (this Node binary on the release's glibc, elfpatch
 *    resolving the release as its host): every file of a tree of the release's Python extension
 *    modules and libraries lists as before, Python imports every extension module from the patched
 *    tree, eu-elflint finds nothing new, a second run writes nothing.
 * chroot needs root: as an ordinary user the tests that use the releases skip. As root, missing
 * releases fail the tests when ELFPATCH_REQUIRE_CORPUS is set (CI), else they skip.
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resolver } from "../../src/resolve/resolver.js";
import type { FileReport } from "../../src/resolve/types.js";
import { listLines, pool, resolverLines, type Run } from "../support/ldso-list.js";
import { findElfFiles, RELEASES, releaseReady, releaseRoot } from "../corpus/list.js";
import { repoRoot } from "../support/fixtures.js";
import { I386_LOADER, i386Command, i386Prefix } from "../support/i386.js";
import { elflint, has, LDSO } from "../support/oracle.js";

const required = !!process.env.ELFPATCH_REQUIRE_CORPUS;
const isRoot = process.getuid?.() === 0;
const ROOT_LOADER = "/lib64/ld-linux-x86-64.so.2";

/** `cmd args` inside `root` (chroot), with a clean environment plus `env`; "" = this machine. */
function inRoot(root: string, cmd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const vars = Object.entries({ PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", LANG: "C", ...env }).map(([k, v]) => `${k}=${v}`);
  const [file, argv] = root ? ["chroot", [root, "env", "-i", ...vars, cmd, ...args]] : ["env", ["-i", ...vars, cmd, ...args]];
  return new Promise((resolve) => {
    execFile(file, argv, { encoding: "utf8", maxBuffer: 1 << 26 }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const width = Math.max(2, Math.min(4, os.availableParallelism()));

/** What differs between the resolver's report and the loader's `--list` run for one file. */
function difference(mine: FileReport, run: Run): string | null {
  if (run.status !== 0) {
    const first = mine.needed.find((e) => e.status === "missing" || e.status === "fatal");
    const want = mine.status === "not-loadable" ? mine.errors[0] : first?.error;
    return want !== undefined && run.stderr.includes(want) ? null : `ld.so failed (${run.status}: ${run.stderr.trim()}), the resolver expects ${want}`;
  }
  const theirs = listLines(run.stdout);
  if (theirs === "static") return mine.needed.length === 0 ? null : "ld.so says statically linked";
  const a = JSON.stringify(theirs);
  const b = JSON.stringify(resolverLines(mine));
  return a === b ? null : `\n  ld.so:    ${a}\n  resolver: ${b}`;
}

/** The subdirectories of `dir` in the first "search path=" line of an LD_DEBUG=libs log naming it ("" = `dir`). */
function searchedSubdirs(log: string, dir: string): string[] | null {
  const line = log.split("\n").find((l) => l.includes("search path=") && l.includes(dir));
  if (!line) return null;
  const list = line.replace(/^.*search path=/, "").replace(/\t.*$/, "").split(":");
  const subs = list.filter((p) => p === dir || p.startsWith(`${dir}/`)).map((p) => p.slice(dir.length + 1));
  return [...new Set(subs)];
}

/** A copy of `lib` at `dest` with DT_RPATH `rpath` (patchelf: an independent tool sets it up). */
function withRpath(lib: string, dest: string, rpath: string): void {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.copyFileSync(lib, dest);
  execFileSync("patchelf", ["--force-rpath", "--set-rpath", rpath, dest]);
}

// ---- 2. hwcaps subdirectories: this machine's loaders and the releases' ------------------------

const NOWHERE = "/elfpatch-nowhere/lib";

interface LoaderCase {
  name: string;
  /** The case runs the loader in chroot: as an ordinary user it skips, whatever is installed. */
  needsRoot: boolean;
  ready: () => boolean;
  /** The directory standing for `/` ("" for this machine). */
  root: () => string;
  loader: string;
  /** A library of the loader's kind to list (with a DT_RPATH added), as a path under `root`. */
  lib: string;
  resolver: () => Resolver;
}

const LOADER_CASES: LoaderCase[] = [
  { name: "this machine's loader", needsRoot: false, ready: () => true, root: () => "", loader: LDSO, lib: "/usr/lib/x86_64-linux-gnu/libm.so.6", resolver: () => new Resolver() },
  {
    name: "Debian's i386 loader", needsRoot: false, ready: () => fs.existsSync(I386_LOADER) && fs.existsSync("/usr/lib32/libm.so.6") && i386Prefix() !== null, root: () => "", loader: I386_LOADER,
    lib: "/usr/lib32/libm.so.6", resolver: () => new Resolver({ target: { elfClass: 1, data: 1, machine: 3 } }),
  },
  ...RELEASES.map((suite): LoaderCase => ({
    name: `${suite}'s loader`, needsRoot: true, ready: () => releaseReady(suite), root: () => releaseRoot(suite), loader: ROOT_LOADER,
    lib: "/usr/lib/x86_64-linux-gnu/libm.so.6", resolver: () => new Resolver({ root: releaseRoot(suite) }),
  })),
];

describe("$LIB and hwcaps subdirectories: the resolver searches where each glibc release searches", () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-hwcaps-"));
  const inRootDirs: string[] = [];
  afterAll(() => {
    fs.rmSync(work, { recursive: true, force: true });
    for (const d of inRootDirs) fs.rmSync(d, { recursive: true, force: true });
  });

  for (const c of LOADER_CASES) {
    it.skipIf((c.needsRoot && !isRoot) || (!c.ready() && !required))(`${c.name}: "search path=" of a DT_RPATH directory`, async () => {
      expect(c.ready(), `${c.name} is needed (libc6-i386; the releases: root and test/corpus/build-corpus.sh)`).toBe(true);
      const root = c.root();
      const dir = root ? path.join(root, "tmp", `elfpatch-hwcaps-${process.pid}`) : path.join(work, c.name.replace(/\W+/g, "-"));
      if (root) inRootDirs.push(dir);
      // The run path is `/elfpatch-nowhere/$LIB`: the loader's expansion of `$LIB` must be the resolver's too.
      withRpath(path.join(root, c.lib), path.join(dir, "lib.so"), `${NOWHERE}/$LIB`);
      const list = ["--list", root ? dir.slice(root.length) + "/lib.so" : path.join(dir, "lib.so")];
      // The i386 loader natively, or under qemu-i386 on a kernel without IA32 emulation.
      const run = await inRoot(root, ...(c.loader === I386_LOADER ? i386Command(c.loader, list) : [c.loader, list] as const), { LD_DEBUG: "libs" });
      expect(run.status, run.stderr.slice(0, 500)).toBe(0);
      const resolver = c.resolver();
      const theirs = searchedSubdirs(run.stdout + run.stderr, `${NOWHERE}/${resolver.profile.lib}`);
      expect(theirs, `$LIB = ${resolver.profile.lib}? ${(run.stdout + run.stderr).slice(0, 500)}`).not.toBeNull();
      expect(resolver.profile.subdirs).toEqual(theirs);
    });
  }

  // One library in several subdirectories of a run-path directory: 2.31 searches only the legacy
  // ones, 2.36 both kinds (glibc-hwcaps first), 2.41 only glibc-hwcaps. Each loader's answer is
  // the resolver's, and the loaders' answers differ (the case tells the releases apart).
  const layouts: { name: string; subdirs: (hwcaps: string | null) => string[] }[] = [
    { name: "legacy x86_64/ and the directory", subdirs: () => ["x86_64", ""] },
    { name: "glibc-hwcaps, legacy x86_64/ and the directory", subdirs: (hw) => (hw ? [hw, "x86_64", ""] : []) },
  ];
  for (const layout of layouts) {
    const cases = LOADER_CASES.filter((c) => c.loader !== I386_LOADER);
    it.skipIf(!isRoot || (!cases.every((c) => c.ready()) && !required))(`a library in ${layout.name}: found where each release finds it`, async () => {
      // The best glibc-hwcaps level this CPU has (none on a baseline x86-64 CPU).
      const hw = new Resolver().profile.subdirs.find((s) => s.startsWith("glibc-hwcaps/")) ?? null;
      const subdirs = layout.subdirs(hw);
      if (subdirs.length === 0) return; // a baseline CPU has no glibc-hwcaps level to try
      const answers = new Set<string>();
      for (const c of cases) {
        expect(c.ready(), c.name).toBe(true);
        const root = c.root();
        const base = `/tmp/elfpatch-hw-${process.pid}`;
        const host = path.join(root || work, root ? base : "hw-" + c.name.replace(/\W+/g, "-"));
        const virt = root ? base : host;
        fs.rmSync(host, { recursive: true, force: true });
        if (root) inRootDirs.push(host);
        buildHwFixture(host, virt, subdirs);
        const run = await inRoot(root, c.loader, ["--list", `${virt}/app/libapp.so`]);
        expect(run.status, run.stderr).toBe(0);
        const listed = (listLines(run.stdout) as string[]).find((l) => l.startsWith("libhwfoo.so => "));
        const report = c.resolver().resolve(path.join(host, "app/libapp.so"));
        expect(resolverLines(report).find((l) => l.startsWith("libhwfoo.so => ")), c.name).toBe(listed);
        answers.add(listed!);
      }
      expect(answers.size, [...answers].join("; ")).toBeGreaterThan(1);
    });
  }
});

let hwObjects: { foo: string; app: string; src: string } | null = null;
// The compiled objects are shared by the fixtures of every case; their directory goes at the end.
afterAll(() => {
  if (hwObjects) fs.rmSync(hwObjects.src, { recursive: true, force: true });
});

/** libapp.so (DT_RPATH `<virt>/lib`, NEEDED libhwfoo.so) and libhwfoo.so in each of `subdirs` of `<host>/lib`. */
function buildHwFixture(host: string, virt: string, subdirs: string[]): void {
  if (!hwObjects) {
    const src = fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-hwsrc-"));
    fs.writeFileSync(path.join(src, "foo.c"), "int hw_foo(void) { return 1; }\n");
    fs.writeFileSync(path.join(src, "app.c"), "int hw_foo(void);\nint hw_app(void) { return hw_foo(); }\n");
    // No libc: the objects load under any glibc release.
    execFileSync("gcc", ["-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libhwfoo.so", "-o", path.join(src, "libhwfoo.so"), path.join(src, "foo.c")]);
    hwObjects = { foo: path.join(src, "libhwfoo.so"), app: path.join(src, "app.c"), src };
  }
  fs.mkdirSync(path.join(host, "app"), { recursive: true });
  execFileSync("gcc", ["-shared", "-fPIC", "-nostdlib", "-o", path.join(host, "app/libapp.so"), hwObjects.app, hwObjects.foo,
    "-Wl,--disable-new-dtags", `-Wl,-rpath,${virt}/lib`]);
  for (const s of subdirs) {
    fs.mkdirSync(path.join(host, "lib", s), { recursive: true });
    fs.copyFileSync(hwObjects.foo, path.join(host, "lib", s, "libhwfoo.so"));
  }
}

// ---- 1 and 3: each release as a whole ------------------------------------------------------------

for (const suite of RELEASES) {
  describe(`${suite}: resolved and patched as its own loader sees it`, () => {
    const root = releaseRoot(suite);
    // chroot needs root: as an ordinary user these skip (build-corpus.sh installs no release then).
    const ready = releaseReady(suite);
    const skip = !isRoot || (!ready && !required);

    it.skipIf(skip)("every ELF file of the release resolves under --root as its ld.so --list lists it (chroot)", async () => {
      expect(ready, `${suite} is needed (root, debootstrap, test/corpus/build-corpus.sh)`).toBe(true);
      const dirs = ["usr/lib/x86_64-linux-gnu", "usr/bin", "usr/sbin", ...pythonDynload(root)];
      const files = dirs.flatMap((d) => findElfFiles(path.join(root, d))).filter((f) => !f.includes("/tmp/elfpatch-"));
      expect(files.length).toBeGreaterThan(300);
      const runs = await pool(files, width, (f) => inRoot(root, ROOT_LOADER, ["--list", f.slice(root.length)]));
      const resolver = new Resolver({ root, mode: "list" });
      const mismatches: string[] = [];
      let edges = 0;
      for (let i = 0; i < files.length; i++) {
        const report = resolver.resolve(files[i]!);
        edges += report.needed.length;
        const diff = difference(report, runs[i]!);
        if (diff) mismatches.push(`${files[i]!.slice(root.length)}: ${diff}`);
      }
      console.log(`${suite}: ${files.length} files, ${edges} edges, ${mismatches.length} mismatches`);
      // The report names the loader whose rules it applied, with the release `ldd --version` gives.
      const ldd = /^ldd \(.*\) (\d+\.\d+)$/m.exec(execFileSync("chroot", [root, "ldd", "--version"], { encoding: "utf8" }))?.[1];
      expect(resolver.loaders()).toMatchObject([{ path: ROOT_LOADER, rules: "glibc", glibc: ldd, lib: "lib/x86_64-linux-gnu", files: files.length }]);
      // The CLI's human summary says so too.
      const cli = spawnSync(process.execPath, [path.join(repoRoot, "build/js/cli/main.js"), "check", "--root", root, files[0]!], { encoding: "utf8" });
      expect(cli.stderr).toContain(`; by glibc ${ldd} ${ROOT_LOADER};`);
      expect(edges).toBeGreaterThan(files.length);
      expect(mismatches.slice(0, 10)).toEqual([]);
    }, 300_000);

    describe("the seed recipe inside the release", () => {
      const app = "/opt/elfpatch";
      const tree = "/tmp/elfpatch-venv";
      const profile = "/opt/elfpatch-profile";
      const node = "/usr/local/bin/elfpatch-node";
      let before: Map<string, Run>;
      let importsBefore: ImportResult;

      beforeAll(async () => {
        if (!ready) return;
        installElfpatch(root, app, node);
        fs.rmSync(path.join(root, tree), { recursive: true, force: true });
        fs.rmSync(path.join(root, profile), { recursive: true, force: true });
        // The tree: the release's Python extension modules and its libraries (copies, no symlinks).
        fs.mkdirSync(path.join(root, tree, "lib-dynload"), { recursive: true });
        fs.mkdirSync(path.join(root, tree, "libs"), { recursive: true });
        for (const d of pythonDynload(root)) {
          for (const f of findElfFiles(path.join(root, d))) fs.copyFileSync(f, path.join(root, tree, "lib-dynload", path.basename(f)));
        }
        for (const f of findElfFiles(path.join(root, "usr/lib/x86_64-linux-gnu"))) {
          if (path.dirname(f) === path.join(root, "usr/lib/x86_64-linux-gnu") && /\.so\./.test(f)) fs.copyFileSync(f, path.join(root, tree, "libs", path.basename(f)));
        }
        // The profile: relative symlinks to some of the release's libraries (as a Nix profile's lib).
        fs.mkdirSync(path.join(root, profile, "lib"), { recursive: true });
        const sys = path.join(root, "usr/lib/x86_64-linux-gnu");
        for (const name of fs.readdirSync(sys)) {
          if (/^lib(z|ssl|crypto|ffi|sqlite3|zstd|lzma|bz2|expat|mpdec)\.so\.\d+$/.test(name)) {
            fs.symlinkSync(`../../../usr/lib/x86_64-linux-gnu/${name}`, path.join(root, profile, "lib", name));
          }
        }
        before = await listTree(root, tree);
        importsBefore = await importAll(root, tree);
      }, 120_000);
      afterAll(() => {
        if (!ready) return;
        for (const p of [app, tree, profile, node]) fs.rmSync(path.join(root, p), { recursive: true, force: true });
      });

      it.skipIf(skip)("patches, every file lists the same libraries, Python imports every module, re-run writes nothing", async () => {
        expect(ready, `${suite} is needed (root, debootstrap, test/corpus/build-corpus.sh)`).toBe(true);
        const recipe = ["--force-rpath", "--add-rpath", `${profile}/lib`, "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${profile}`];
        const originals = fs.mkdtempSync(path.join(os.tmpdir(), `elfpatch-${suite}-orig-`));
        fs.cpSync(path.join(root, tree), originals, { recursive: true });
        const first = await inRoot(root, node, [`${app}/build/js/cli/main.js`, "patch", "--json", "--no-progress", "--no-cache", ...recipe, tree]);
        expect(first.status, first.stderr).toBe(0);
        const records = first.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
        const summary = records.find((r) => r.type === "summary") as { patched: number; failed: number; files: number };
        expect(summary.failed).toBe(0);
        expect(summary.patched).toBeGreaterThan(3);
        const changed = records.filter((r) => r.type === "file" && r.status === "patched").map((r) => String(r.path));

        // The loader lists the same objects (by real file) for every file, some through the profile.
        const after = await listTree(root, tree);
        let viaProfile = 0;
        for (const [f, run] of before) {
          const a = after.get(f)!;
          expect(a.status, `${f}: ${a.stderr}`).toBe(run.status);
          expect(realLines(root, a.stdout), f).toEqual(realLines(root, run.stdout));
          if (a.stdout.includes(`${profile}/lib/`)) viaProfile++;
        }
        expect(viaProfile).toBeGreaterThan(0);
        for (const f of changed) {
          const dyn = execFileSync("readelf", ["-dW", path.join(root, f)], { encoding: "utf8" });
          expect(dyn, f).toMatch(/\(RPATH\)/);
          expect(dyn, f).not.toMatch(/\(RUNPATH\)/);
          expect(complaintsAdded(lint(path.join(originals, path.relative(tree, f))), lint(path.join(root, f))), f).toEqual([]);
        }
        fs.rmSync(originals, { recursive: true, force: true });

        const imports = await importAll(root, tree);
        expect(imports.imported).toBeGreaterThan(20);
        expect(imports.imported).toBe(importsBefore.imported);
        expect(imports.failures).toEqual(importsBefore.failures);

        const hashes = hashTree(path.join(root, tree));
        const again = await inRoot(root, node, [`${app}/build/js/cli/main.js`, "patch", "--json", "--no-progress", "--no-cache", ...recipe, tree]);
        expect(again.status, again.stderr).toBe(0);
        const s2 = JSON.parse(again.stdout.trim().split("\n").at(-1)!) as { patched: number; failed: number };
        expect(s2).toMatchObject({ patched: 0, failed: 0 });
        expect(hashTree(path.join(root, tree))).toEqual(hashes);
      }, 300_000);
    });
  });
}

/** `usr/lib/python3.X/lib-dynload` directories of a root. */
function pythonDynload(root: string): string[] {
  const lib = path.join(root, "usr/lib");
  return fs.readdirSync(lib).filter((d) => /^python3\.\d+$/.test(d)).map((d) => `usr/lib/${d}/lib-dynload`).filter((d) => fs.existsSync(path.join(root, d)));
}

/** This Node binary and elfpatch (build/ and its runtime packages) inside `root`. */
function installElfpatch(root: string, app: string, node: string): void {
  const dest = path.join(root, app);
  fs.rmSync(dest, { recursive: true, force: true });
  fs.mkdirSync(dest, { recursive: true });
  fs.cpSync(path.join(repoRoot, "build"), path.join(dest, "build"), { recursive: true });
  fs.copyFileSync(path.join(repoRoot, "package.json"), path.join(dest, "package.json"));
  const deps = execFileSync("npm", ["ls", "--omit=dev", "--all", "--parseable"], { cwd: repoRoot, encoding: "utf8" })
    .split("\n").filter((l) => l.startsWith(path.join(repoRoot, "node_modules") + path.sep));
  for (const d of deps) fs.cpSync(d, path.join(dest, path.relative(repoRoot, d)), { recursive: true });
  fs.rmSync(path.join(root, node), { force: true });
  try {
    fs.linkSync(process.execPath, path.join(root, node));
  } catch {
    fs.copyFileSync(process.execPath, path.join(root, node));
  }
}

/** `ld.so --list` of every file in the tree, inside the root. */
async function listTree(root: string, tree: string): Promise<Map<string, Run>> {
  const files = findElfFiles(path.join(root, tree)).map((f) => f.slice(root.length));
  const runs = await pool(files, width, (f) => inRoot(root, ROOT_LOADER, ["--list", f]));
  return new Map(files.map((f, i) => [f, runs[i]!]));
}

/** A listing's objects as `name => real file` (symlinks resolved inside the root). */
function realLines(root: string, stdout: string): string[] {
  const lines = listLines(stdout);
  if (lines === "static") return ["static"];
  return lines.map((l) => {
    const [name, p] = l.split(" => ") as [string, string];
    return `${name} => ${p.startsWith("/") ? realInRoot(root, p) : p}`;
  });
}

const realPaths = new Map<string, string>();

/** The real path of a virtual path inside `root` (`readlink -f` in the root). */
function realInRoot(root: string, p: string): string {
  const key = `${root}\0${p}`;
  let real = realPaths.get(key);
  if (real === undefined) {
    real = execFileSync("chroot", [root, "readlink", "-f", p], { encoding: "utf8" }).trim();
    realPaths.set(key, real);
  }
  return real;
}

interface ImportResult {
  imported: number;
  failures: string[];
}

/** Imports every extension module of the tree's lib-dynload with the release's Python (from the tree, not its own copy). */
async function importAll(root: string, tree: string): Promise<ImportResult> {
  const script = [
    "import importlib, json, os, sys",
    `d = ${JSON.stringify(`${tree}/lib-dynload`)}`,
    "mods = sorted({f.split('.')[0] for f in os.listdir(d) if f.endswith('.so')})",
    "ok, bad = 0, []",
    "for m in mods:",
    "    try:",
    "        mod = importlib.import_module(m)",
    "        assert getattr(mod, '__file__', '').startswith(d), f'{m} from {getattr(mod, \"__file__\", None)}'",
    "        ok += 1",
    "    except Exception as e:",
    "        bad.append(f'{m}: {e}')",
    "print(json.dumps({'imported': ok, 'failures': bad}))",
  ].join("\n");
  const r = await inRoot(root, "python3", ["-c", script], { PYTHONPATH: `${tree}/lib-dynload` });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as ImportResult;
}

function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of findElfFiles(dir)) out[f] = createHash("sha256").update(fs.readFileSync(f)).digest("hex");
  return out;
}

/** eu-elflint's complaints with segment and dynamic entry numbers left out (a new segment renumbers them). */
function lint(file: string): string[] {
  if (!has("eu-elflint")) return [];
  return elflint(file).map((l) => l.replace(/program header entry \d+/g, "program header entry N").replace(/('\.dynamic': entry) \d+/g, "$1 N"));
}

/** Complaints in `after` beyond those in `before` (as multisets). */
function complaintsAdded(before: string[], after: string[]): string[] {
  const left = [...before];
  return after.filter((c) => {
    const i = left.indexOf(c);
    if (i < 0) return true;
    left.splice(i, 1);
    return false;
  });
}
