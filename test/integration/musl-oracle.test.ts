/**
 * Trees whose loader is musl's (`musl-gcc` output, as on Alpine and in musllinux wheels) are
 * resolved by musl's rules (src/resolve/musl.ts), judged by musl's own loader:
 * - `ld-musl-x86_64.so.1 --list PROGRAM` against the resolver in `list` mode: every library it
 *   maps, by which name and from which path, and every library it fails on with its message.
 *   The tree is built so that glibc's rules would answer differently at each step: a `DT_RUNPATH`
 *   inherited by the libraries it loads; a `DT_RPATH` with `$LIB`, which musl ignores whole; a
 *   `DT_NEEDED` with `$ORIGIN`, which musl opens literally; a name that is only another library's
 *   SONAME (musl matches loaded libraries by file name only); `libpthread.so.0` and `libm.so.6`,
 *   which are the loader itself; `libz.so.1`, in glibc's directories but not on musl's system
 *   path (`/etc/ld-musl-x86_64.path`); a first candidate that is not a loadable file (musl fails
 *   instead of trying the next).
 * - A musl program that `dlopen`s a library and prints what got mapped, against `--exe` dlopen
 *   mode (the library's search goes on to the program's run path).
 * - The tree patched with a run path that needs a new segment: musl's loader (which maps files with
 *   code of its own, not glibc's) lists it as before, the `dlopen` still works, eu-elflint and
 *   readelf find nothing new, a second run changes nothing.
 * - As root, a root directory with only musl's loader and its own path file, listed by that loader
 *   under `chroot`, against `check --root`.
 * Needs `musl-gcc` and `/lib/ld-musl-x86_64.so.1` (Debian's `musl-tools`; CI installs it).
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resolver } from "../../src/resolve/resolver.js";
import type { FileReport } from "../../src/resolve/types.js";
import { makeTempDir, repoRoot } from "../support/fixtures.js";
import { muslListingOf, parseMuslList, sortedListing, type MuslListing } from "../support/musl.js";
import { elflint, has } from "../support/oracle.js";
import { patchJson } from "../support/patch-cli.js";

const MUSL_LDSO = "/lib/ld-musl-x86_64.so.1";
const READY = has("musl-gcc") && fs.existsSync(MUSL_LDSO);
const SRC = path.join(repoRoot, "fixtures", "musl");

if (!READY && process.env.ELFPATCH_REQUIRE_CORPUS) {
  throw new Error("musl-gcc or /lib/ld-musl-x86_64.so.1 is missing (Debian: apt-get install musl-tools)");
}

let T = "";

function cc(args: string[]): void {
  execFileSync("musl-gcc", ["-Wl,--no-as-needed", ...args], { stdio: ["ignore", "ignore", "pipe"] });
}

/** A library whose only purpose is to put `soname` into the DT_NEEDED of what links with it. */
function stub(soname: string): string {
  const out = path.join(T, "stubs", `${Buffer.from(soname).toString("hex")}.so`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  cc(["-shared", "-fPIC", "-DNAME=stub", path.join(SRC, "obj.c"), "-o", out, `-Wl,-soname,${soname}`]);
  return out;
}

/** A library at `rel` (under T) with function `name`, linked with `needs` (DT_NEEDED names) and `flags`. */
function lib(rel: string, name: string, needs: string[], flags: string[] = [], soname?: string): string {
  const out = path.join(T, rel);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const so = soname ? [`-Wl,-soname,${soname}`] : [];
  cc(["-shared", "-fPIC", `-DNAME=${name}`, path.join(SRC, "obj.c"), "-o", out, ...so, ...flags, ...needs.map(stub)]);
  return out;
}

function program(rel: string, source: string, needs: string[], flags: string[]): string {
  const out = path.join(T, rel);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  cc([path.join(SRC, source), "-o", out, ...flags, ...needs.map(stub)]);
  return out;
}

type Listing = MuslListing;

/** musl's `--list` output, parsed. */
function muslList(args: string[], opts: { cwd?: string; chroot?: string } = {}): Listing {
  const argv = opts.chroot ? ["chroot", opts.chroot, MUSL_LDSO, "--list", ...args] : [MUSL_LDSO, "--list", ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", cwd: opts.cwd ?? T });
  return parseMuslList(r.stdout, r.stderr, MUSL_LDSO);
}

/** The resolver's answer in the same shape. */
const ours = (report: FileReport, loader = MUSL_LDSO): Listing => muslListingOf(report, loader);

/** readelf's warnings and errors about a file (its output otherwise differs after any edit). */
function readelfComplaints(file: string): string[] {
  const r = spawnSync("readelf", ["-W", "-a", file], { encoding: "utf8" });
  return `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => /warning|error/i.test(l)).map((l) => l.split(file).join("<file>"));
}

const sorted = sortedListing;

describe.skipIf(!READY)("musl's loader as the oracle", () => {
  let main = "";
  let bad = "";
  let dl = "";

  beforeAll(() => {
    T = makeTempDir("elfpatch-musl-");
    const runpath = ["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib"];
    const rpath = (list: string): string[] => ["-Wl,--disable-new-dtags", `-Wl,-rpath,${list}`];
    lib("app/sub/libc2.so", "c2", []);
    lib("app/sub/libe.so", "e", []);
    lib("app/lib/libc2.so.bak", "c2bak", []);
    lib("app/lib/libo.so", "o", []);
    // libb: DT_RPATH with $LIB (musl ignores the whole list, so libc2.so is not found in sub/).
    lib("app/lib/libb.so", "b", ["libc2.so"], rpath("$LIB/none:$ORIGIN/../sub"));
    // libs: found as libs.so; its SONAME libsname.so.1 is asked for by liba and never matched.
    lib("app/lib/libs.so", "s", [], [], "libsname.so.1");
    // liba: no run path of its own; libb.so is found through main's DT_RUNPATH.
    lib("app/lib/liba.so", "a", ["libb.so", "libsname.so.1", "libz.so.1", "libm.so.6"]);
    // libq: opened by its absolute path; its DT_RPATH finds libe.so.
    const q = lib("app/opt/libq.so", "q", ["libe.so"], rpath("$ORIGIN/../sub"));
    main = program("app/bin/main", "main.c", ["libs.so", "liba.so", "libpthread.so.0", "$ORIGIN/../lib/libo.so", q], runpath);
    // A first candidate that is not an ELF file: musl stops there.
    fs.mkdirSync(path.join(T, "app/junk"), { recursive: true });
    fs.writeFileSync(path.join(T, "app/junk/libe.so"), "not an ELF file\n");
    bad = program("app/bin/bad", "main.c", ["libe.so"], rpath("$ORIGIN/../junk:$ORIGIN/../sub"));
    // dlopen: plugins without run paths, loaded by a program whose DT_RUNPATH has their deps.
    lib("app/lib/libb2.so", "b2", ["libm.so"]);
    lib("app/plug/libp.so", "p", ["libb2.so"]);
    lib("app/plug/libp2.so", "p2", ["libnone.so"]);
    dl = program("app/bin/dl", "dl.c", [], runpath);
  });

  afterAll(() => {
    if (T) fs.rmSync(T, { recursive: true, force: true });
  });

  it("a program: every library and every failure as `ld-musl --list` says", () => {
    for (const prog of [main, bad]) {
      const oracle = sorted(muslList([prog]));
      const report = new Resolver({ mode: "list" }).resolve(prog);
      expect(sorted(ours(report)), path.basename(prog)).toEqual(oracle);
    }
    // The cases the tree was built for, spelled out (so that an oracle that printed nothing fails).
    const report = new Resolver({ mode: "list" }).resolve(main);
    const edge = (name: string) => report.needed.find((e) => e.name === name)!;
    expect(edge("libb.so")).toMatchObject({ status: "found", via: "runpath", from: main, path: `${T}/app/bin/../lib/libb.so` });
    expect(edge("libc2.so")).toMatchObject({ status: "missing" });
    expect(edge("libsname.so.1")).toMatchObject({ status: "missing" });
    expect(edge("libz.so.1")).toMatchObject({ status: "missing" });
    expect(edge("$ORIGIN/../lib/libo.so")).toMatchObject({ status: "missing" });
    expect(edge("libe.so")).toMatchObject({ status: "found", via: "rpath", path: `${T}/app/opt/../sub/libe.so` });
    for (const n of ["libm.so.6", "libpthread.so.0"]) expect(edge(n)).toMatchObject({ status: "found", path: MUSL_LDSO });
    expect(report.status).toBe("unresolved");
    const b = new Resolver({ mode: "list" }).resolve(bad);
    expect(b.needed.find((e) => e.name === "libe.so")).toMatchObject({ status: "fatal", path: `${T}/app/bin/../junk/libe.so` });
  });

  it("dlopen from a musl program (`--exe`): what the program maps, or its message", () => {
    for (const plugin of ["app/plug/libp.so", "app/plug/libp2.so"]) {
      const file = path.join(T, plugin);
      const r = spawnSync(dl, [file], { encoding: "utf8" });
      const report = new Resolver({ mode: "dlopen", exe: dl }).resolve(file);
      if (r.status === 0) {
        const musl = fs.realpathSync(MUSL_LDSO);
        const mapped = r.stdout.split("\n").slice(1).filter((l) => l.endsWith(".so") && fs.realpathSync(l) !== musl);
        const loaded = report.needed.filter((e) => e.status === "found" && e.path !== MUSL_LDSO).map((e) => fs.realpathSync(e.path!));
        expect(report.status).toBe("ok");
        expect([...new Set([fs.realpathSync(file), ...loaded])].sort()).toEqual(mapped.map((m) => fs.realpathSync(m)).sort());
        expect(mapped.length).toBeGreaterThan(1);
      } else {
        expect(r.stdout).toMatch(/^error Error loading shared library libnone\.so: No such file or directory/);
        expect(report.missing).toEqual(["libnone.so"]);
      }
    }
  });

  it("patched and grown to a new segment, the musl tree loads and lists as before under musl's loader", () => {
    const copy = path.join(T, "patched");
    fs.cpSync(path.join(T, "app"), copy, { recursive: true });
    // A run path too long for any slack: every file gets a new segment.
    const long = Array.from({ length: 60 }, (_, i) => `/nix/store/${String(i).padStart(2, "0")}-musl-dependency-xxxxxxxxxxxxxxxx/lib`).join(":");
    const args = ["--force-rpath", "--add-rpath", long, copy];
    const files = patchJson(args).files.filter((r) => r.status !== "skipped");
    expect(files.length).toBeGreaterThanOrEqual(12);
    expect(files.filter((r) => r.status !== "patched")).toEqual([]);
    expect(files.every((r) => r.strategy === "new-segment" || r.strategy === "slack")).toBe(true);
    expect(files.some((r) => r.strategy === "new-segment")).toBe(true);
    // (main's DT_NEEDED of libq.so is an absolute path: the copy still loads the original's.)
    const rel = (l: Listing, base: string): Listing => {
      const strip = (x: string): string => x.split(base).join("<app>").split(path.join(T, "app")).join("<app>");
      return sorted({ found: l.found.map(strip), failed: l.failed.map(strip), self: l.self });
    };
    for (const prog of ["bin/main", "bin/bad"]) {
      expect(rel(muslList([path.join(copy, prog)]), copy)).toEqual(rel(muslList([path.join(T, "app", prog)]), path.join(T, "app")));
    }
    // eu-elflint and readelf find nothing new in any patched file.
    for (const r of files) {
      const original = path.join(T, "app", path.relative(copy, r.path!));
      expect(elflint(r.path!), r.path).toEqual(elflint(original));
      expect(readelfComplaints(r.path!), r.path).toEqual(readelfComplaints(original));
    }
    const dlopen = spawnSync(path.join(copy, "bin/dl"), [path.join(copy, "plug/libp.so")], { encoding: "utf8" });
    expect(dlopen.stdout.split("\n")[0]).toBe("ok");
    expect(dlopen.stdout).toContain(path.join(copy, "lib/libb2.so"));
    // The same run again changes nothing.
    const summary = patchJson(args).summary;
    expect(summary.patched).toBe(0);
    expect(summary.unchanged).toBe(files.length);
  });

  it("musl's loader itself (its libc.so) is patched like a library and still runs programs", () => {
    const copy = path.join(T, "musl-loader", "libc.so");
    fs.mkdirSync(path.dirname(copy));
    fs.copyFileSync(fs.realpathSync(MUSL_LDSO), copy);
    fs.chmodSync(copy, 0o755);
    expect(patchJson(["--force-rpath", "--add-rpath", "/nix/profile/lib", copy]).files[0]).toMatchObject({ status: "patched" });
    expect(execFileSync("readelf", ["-d", copy], { encoding: "utf8" })).toMatch(/RPATH.*\/nix\/profile\/lib/);
    const run = spawnSync(copy, [dl, path.join(T, "app/plug/libp.so")], { encoding: "utf8" });
    expect(run.stdout.split("\n")[0]).toBe("ok");
  });

  it("elfpatch check --root on a root with only musl's loader: its path file decides (chroot oracle)", (ctx) => {
    if (process.getuid?.() !== 0) return ctx.skip(); // chroot needs root
    const R = path.join(T, "root");
    for (const d of ["lib", "etc", "opt/mylibs", "usr/lib", "app"]) fs.mkdirSync(path.join(R, d), { recursive: true });
    fs.copyFileSync(fs.realpathSync(MUSL_LDSO), path.join(R, MUSL_LDSO));
    fs.chmodSync(path.join(R, MUSL_LDSO), 0o755);
    fs.writeFileSync(path.join(R, "etc/ld-musl-x86_64.path"), "/opt/mylibs\n");
    fs.copyFileSync(path.join(T, "app/lib/libb2.so"), path.join(R, "opt/mylibs/libb2.so"));
    fs.copyFileSync(path.join(T, "app/lib/libb2.so"), path.join(R, "usr/lib/libb2.so")); // musl's default path: not used
    fs.copyFileSync(path.join(T, "app/plug/libp.so"), path.join(R, "app/libp.so"));
    const oracle = muslList(["/app/libp.so"], { chroot: R, cwd: "/" });
    expect(oracle.found).toEqual(["libb2.so => /opt/mylibs/libb2.so"]);
    const report = new Resolver({ root: R }).resolve(path.join(R, "app/libp.so"));
    expect(report.status).toBe("ok");
    expect(sorted(ours(report))).toEqual(sorted(oracle));
    // Without the path file, musl's default path (/lib:/usr/local/lib:/usr/lib) applies.
    fs.rmSync(path.join(R, "etc/ld-musl-x86_64.path"));
    const byDefault = muslList(["/app/libp.so"], { chroot: R, cwd: "/" });
    expect(byDefault.found).toEqual(["libb2.so => /usr/lib/libb2.so"]);
    expect(sorted(ours(new Resolver({ root: R }).resolve(path.join(R, "app/libp.so"))))).toEqual(sorted(byDefault));
  });
});
