/**
 * `check --root` on sysroots of other architectures, against each one's own glibc loader run under
 * qemu-user (`qemu-<arch> -L ROOT ROOT/<loader> --list FILE`, which opens the root's files for the
 * loader's absolute paths). Each root is built from a Debian cross libc package in Debian's
 * multiarch layout (`/lib/<triplet>/`, the loader at its ABI path), plus an application tree: a
 * library that needs a dependency through a `$ORIGIN` DT_RPATH, the dependency (needing libm), and
 * one library with a NEEDED that no directory has. For every library the loader lists, `check`
 * must give the same path; where the loader fails, `check` must name the same missing library.
 * Before the resolver modelled targets, every file of another machine was "not-loadable".
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { crossLoader, crossPackageDir, crossPackageReady, type CrossLoader } from "../corpus/list.js";
import { makeTempDir, repoRoot } from "../support/fixtures.js";
import { I386_LOADER, i386Command, i386Prefix } from "../support/i386.js";
import { has } from "../support/oracle.js";
import { Resolver } from "../../src/resolve/resolver.js";

const CLI = path.join(repoRoot, "build", "js", "cli", "main.js");
const required = !!process.env.ELFPATCH_REQUIRE_CORPUS;

/** The seven packages made into sysroots (both classes and byte orders, MIPS n64, ARM, RISC-V). */
const ROOTS: CrossLoader[] = [
  "libc6-arm64-cross", "libc6-ppc64-cross", "libc6-s390x-cross", "libc6-powerpc-cross", "libc6-armhf-cross",
  "libc6-mips64el-cross", "libc6-riscv64-cross",
].map(crossLoader);

/** The multiarch triplet of a package's `usr/<triplet>/lib`. */
const tripletOf = (r: CrossLoader): string => r.libDir.split("/")[1]!;

const patch = (args: string[]): void => void execFileSync(process.execPath, [CLI, "patch", "--no-cache", ...args], { stdio: "ignore" });

/** A sysroot of the package: its libraries under /lib/<triplet>, its loader at its ABI path. */
function buildSysroot(r: CrossLoader, dir: string): string {
  const lib = path.join(dir, "lib", tripletOf(r));
  fs.cpSync(path.join(crossPackageDir(r.pkg), r.libDir), lib, { recursive: true, verbatimSymlinks: true });
  const loader = path.join(dir, r.abiPath);
  fs.mkdirSync(path.dirname(loader), { recursive: true });
  fs.rmSync(loader, { force: true });
  fs.copyFileSync(path.join(crossPackageDir(r.pkg), r.loader), loader);
  fs.rmSync(path.join(lib, path.basename(r.abiPath)), { force: true });
  return lib;
}

/**
 * An application tree made of copies of `lib`'s libraries: `app/libapp.so` needs `libdep.so.9`
 * through the DT_RPATH `rpath`; `dep/libdep.so.9` needs libm; `app/libbroken.so` needs a library
 * no directory has.
 */
function buildApp(lib: string, app: string, dep: string, rpath: string): void {
  fs.mkdirSync(app, { recursive: true });
  fs.mkdirSync(dep, { recursive: true });
  fs.copyFileSync(path.join(lib, "libanl.so.1"), path.join(app, "libapp.so"));
  fs.copyFileSync(path.join(lib, "libresolv.so.2"), path.join(dep, "libdep.so.9"));
  fs.copyFileSync(path.join(lib, "libutil.so.1"), path.join(app, "libbroken.so"));
  patch(["--set-soname", "libdep.so.9", "--add-needed", "libm.so.6", path.join(dep, "libdep.so.9")]);
  patch(["--set-soname", "libapp.so", "--add-needed", "libdep.so.9", "--force-rpath", "--set-rpath", rpath, path.join(app, "libapp.so")]);
  patch(["--add-needed", "libmissing.so.3", path.join(app, "libbroken.so")]);
}

/** The sysroot with its application tree under /opt (`/opt/app/lib`, `/opt/dep`). */
function buildRoot(r: CrossLoader, dir: string): void {
  const lib = buildSysroot(r, dir);
  buildApp(lib, path.join(dir, "opt", "app", "lib"), path.join(dir, "opt", "dep"), "$ORIGIN/../../dep");
}

/** What a loader's `--list` says: name -> path of each library, or the library it could not find. */
interface Listing {
  libs: Map<string, string>;
  missing: string | null;
}

/** Runs `cmd args` (a loader's `--list`) and reads its listing. */
function listing(cmd: string, args: string[]): Listing {
  const out = spawnSync(cmd, args, { encoding: "utf8", timeout: 60_000 });
  const libs = new Map<string, string>();
  for (const line of out.stdout.split("\n")) {
    const m = /^\s*(\S+) => (\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (m) libs.set(m[1]!, m[2]!);
  }
  const missing = /error while loading shared libraries: ([^:]+): cannot open shared object file/.exec(out.stderr)?.[1] ?? null;
  // A loader that did not run (a kernel that cannot execute it, a qemu crash) lists nothing: that
  // must not pass for an empty listing.
  if (out.status !== 0 && missing === null) throw new Error(`${cmd} ${args.join(" ")} failed (${out.status}): ${out.stderr}${out.error ?? ""}`);
  return { libs, missing };
}

/** The root's loader under qemu: `qemu-<arch> -L ROOT ROOT/<loader> --list FILE`. */
const loaderList = (r: CrossLoader, root: string, file: string): Listing =>
  listing(r.qemu!, ["-L", root, path.join(root, r.abiPath), "--list", file]);

interface CheckRecord {
  type: string;
  path: string;
  status: string;
  needed: { name: string; path: string | null; status: string }[];
  missing: string[];
}

function check(files: string[], root?: string): CheckRecord[] {
  const args = ["check", "--json", ...(root ? ["--root", root] : []), ...files];
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as CheckRecord).filter((x) => x.type === "file");
}

/** Where `check` and the loader disagree, for each file (`list` gives the loader's view of one). */
function compare(
  records: CheckRecord[],
  files: string[],
  list: (file: string) => Listing,
  loaderName: string,
): { problems: string[]; compared: number } {
  const problems: string[] = [];
  let compared = 0;
  for (const v of files) {
    const mine = records.find((x) => x.path === v);
    const theirs = list(v);
    if (!mine) {
      problems.push(`${v}: no check record`);
      continue;
    }
    if (theirs.missing !== null) {
      if (!mine.missing.includes(theirs.missing)) problems.push(`${v}: the loader misses ${theirs.missing}, check says ${JSON.stringify(mine.missing)}`);
      compared++;
      continue;
    }
    if (mine.status !== "ok") problems.push(`${v}: the loader lists it, check says ${mine.status} ${JSON.stringify(mine.missing)}`);
    for (const [name, where] of theirs.libs) {
      const edge = mine.needed.find((e) => e.name === name);
      if (edge === undefined) {
        // The loader itself shows up by its SONAME in a listing, without a NEEDED edge of its own.
        if (path.basename(where) !== loaderName) problems.push(`${v}: ${name} => ${where} not in check's tree`);
        continue;
      }
      compared++;
      if (path.normalize(edge.path ?? "") !== path.normalize(where)) problems.push(`${v}: ${name}: loader ${where}, check ${edge.path}`);
    }
  }
  return { problems, compared };
}

const T = makeTempDir("elfpatch-foreign-resolve-");
afterAll(() => fs.rmSync(T, { recursive: true, force: true }));

describe("check --root on other architectures' sysroots, against their own loaders", () => {
  for (const r of ROOTS) {
    const ready = crossPackageReady(r.pkg) && has(r.qemu!);
    it.skipIf(!ready && !required)(`${r.pkg}: every library the loader lists resolves to the same path`, () => {
      expect(ready, `${r.pkg} (test/corpus/build-corpus.sh) and ${r.qemu} (qemu-user) are needed`).toBe(true);
      const root = path.join(T, r.pkg);
      buildRoot(r, root);
      const virtual = ["/opt/app/lib/libapp.so", "/opt/dep/libdep.so.9", "/opt/app/lib/libbroken.so", `/lib/${tripletOf(r)}/libm.so.6`];
      const records = check(virtual.map((v) => path.join(root, v)), root);
      const { problems, compared } = compare(records, virtual, (v) => loaderList(r, root, v), path.basename(r.abiPath));
      expect(problems).toEqual([]);
      // libapp -> libdep (rpath), libc, libm...; libdep -> libm, libc; libbroken's missing name; libm -> libc.
      expect(compared).toBeGreaterThanOrEqual(6);
      const app = records.find((x) => x.path === "/opt/app/lib/libapp.so")!;
      expect(app.needed.find((e) => e.name === "libdep.so.9")?.path).toBe("/opt/app/lib/../../dep/libdep.so.9");
    });
  }
});

describe("32-bit libraries on this x86-64 machine (Debian's libc6-i386), against its i386 loader", () => {
  const ready = fs.existsSync(I386_LOADER) && fs.existsSync("/usr/lib32/libc.so.6") && i386Prefix() !== null;
  if (!ready && required) throw new Error("libc6-i386 is needed (Debian: apt-get install libc6-i386), and a kernel with IA32 emulation or qemu-i386");

  it.skipIf(!ready)("every /usr/lib32 library and an application tree: check (no --root) agrees with ld-linux.so.2 --list", () => {
    // The host's ld.so.cache has both machines' entries; each file is resolved by its own kind's loader.
    const app = path.join(T, "i386", "app");
    const dep = path.join(T, "i386", "dep");
    buildApp("/usr/lib32", app, dep, "$ORIGIN/../dep");
    const system = fs.readdirSync("/usr/lib32").filter((n) => /\.so(\.\d+)*$/.test(n) && !n.startsWith("ld-"))
      .map((n) => path.join("/usr/lib32", n)).filter((p) => fs.statSync(p).isFile() && !fs.lstatSync(p).isSymbolicLink());
    const files = [path.join(app, "libapp.so"), path.join(dep, "libdep.so.9"), path.join(app, "libbroken.so"), ...system];
    const records = check(files);
    const { problems, compared } = compare(records, files, (f) => listing(...i386Command(I386_LOADER, ["--list", f])), "ld-linux.so.2");
    expect(problems).toEqual([]);
    expect(system.length).toBeGreaterThan(10);
    expect(compared).toBeGreaterThan(system.length);
    expect(records.find((x) => x.path === path.join(app, "libapp.so"))?.needed.find((e) => e.name === "libdep.so.9")?.path)
      .toBe(`${app}/../dep/libdep.so.9`);
  });
});

describe("patch --shrink-rpath on another architecture's tree (transitive, by that architecture's loader)", () => {
  const r = ROOTS[0]!; // arm64
  const ready = crossPackageReady(r.pkg) && has(r.qemu!);

  it.skipIf(!ready && !required)("keeps the directory a dependency finds its library in through the inherited DT_RPATH", () => {
    expect(ready, `${r.pkg} and ${r.qemu} are needed`).toBe(true);
    // A root that has only the C library (for the loader under qemu); the tree itself is outside it,
    // so the loader reads it at its host paths (qemu -L falls back to them).
    const root = path.join(T, "shrink-root");
    const lib = buildSysroot(r, root);
    const tree = path.join(T, "shrink-tree");
    for (const d of ["app", "dep", "prof", "empty"]) fs.mkdirSync(path.join(tree, d), { recursive: true });
    // app/libapp.so -> libdep.so.9 (dep/, no run path of its own) -> libz.so.1 (prof/ only).
    fs.copyFileSync(path.join(lib, "libanl.so.1"), path.join(tree, "app", "libapp.so"));
    fs.copyFileSync(path.join(lib, "libresolv.so.2"), path.join(tree, "dep", "libdep.so.9"));
    fs.copyFileSync(path.join(lib, "libutil.so.1"), path.join(tree, "prof", "libz.so.1"));
    patch(["--set-soname", "libz.so.1", path.join(tree, "prof", "libz.so.1")]);
    patch(["--set-soname", "libdep.so.9", "--add-needed", "libz.so.1", path.join(tree, "dep", "libdep.so.9")]);
    patch(["--add-needed", "libdep.so.9", path.join(tree, "app", "libapp.so")]);
    const dirs = ["dep", "prof", "empty"].map((d) => path.join(tree, d));
    const app = path.join(tree, "app", "libapp.so");
    patch(["--force-rpath", "--add-rpath", dirs.join(":"), "--shrink-rpath", app]);
    const rpath = /Library rpath: \[(.*)\]/.exec(execFileSync("readelf", ["-d", app], { encoding: "utf8" }))?.[1];
    // dep/ provides libapp's NEEDED; prof/ provides libdep's, found through libapp's DT_RPATH.
    expect(rpath).toBe(`${dirs[0]}:${dirs[1]}`);
    const listed = loaderList(r, root, app);
    expect(listed.missing).toBeNull();
    expect(listed.libs.get("libdep.so.9")).toBe(path.join(dirs[0]!, "libdep.so.9"));
    expect(listed.libs.get("libz.so.1")).toBe(path.join(dirs[1]!, "libz.so.1"));
  });
});

describe("the API: a resolver's own loader options stay with its own target", () => {
  const r = ROOTS[0]!; // arm64
  const ready = crossPackageReady(r.pkg);

  it.skipIf(!ready && !required)("default directories given for the host's loader do not apply to an arm64 file", () => {
    expect(ready, `${r.pkg} is needed`).toBe(true);
    const root = path.join(T, "api-root");
    buildRoot(r, root);
    const file = path.join(root, "lib", tripletOf(r), "libm.so.6");
    // x86-64 files (none here) would be searched in /nowhere; the arm64 file by its loader's directories.
    const res = new Resolver({ root, defaultDirs: ["/nowhere"], interpreter: "/lib64/ld-linux-x86-64.so.2" });
    const report = res.resolve(file);
    expect(report.needed.find((e) => e.name === "libc.so.6")).toMatchObject({ status: "found", path: `/lib/${tripletOf(r)}/libc.so.6`, via: "default" });
  });
});
