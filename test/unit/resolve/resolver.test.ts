/**
 * The static resolver (src/resolve/) against loader.md's search-order rules, on small C chains
 * built by test/support/resolve-fixtures.ts (W below). Each expectation is the loader's documented
 * answer (loader.md §18; the integration test resolve-oracle.test.ts checks the same trees against
 * the real ld.so):
 * - token expansion and path lists (§4, §5);
 * - RPATH inherited through the l_loader chain, also through an object with RUNPATH (exp. 1, 7a);
 *   RUNPATH not inherited (2); RPATH ignored when the requester has RUNPATH (3), also when the
 *   object has both (7b); LD_LIBRARY_PATH after RPATH and before RUNPATH (4);
 * - empty elements = CWD (5); wrong class skipped, other bad candidates fatal (6);
 * - breadth-first first loader (8); NEEDED with `/`, SONAME match, NODEFLIB, `$LIB`, hwcaps,
 *   `$ORIGIN` through symlinks (9); symbol versions; dlopen context (16); `--root`; caching.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expandTokens, libraryPathDirs, runPathDirs } from "../../../src/resolve/expand.js";
import { activeHwcapsDirs } from "../../../src/resolve/hwcaps.js";
import { Resolver } from "../../../src/resolve/resolver.js";
import type { FileReport, NeededRecord, ResolverOptions } from "../../../src/resolve/types.js";
import { buildResolveFixtures, hasI386, LIB } from "../../support/resolve-fixtures.js";

let W: string;
let tmp: string;

beforeAll(() => {
  W = buildResolveFixtures();
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-resolve-")));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Resolves W/exe as the main program (as the kernel starts it). */
function run(exe: string, opts: ResolverOptions = {}): FileReport {
  return new Resolver({ mode: "exec", ...opts }).resolve(path.join(W, exe));
}

/** The edge for `name` (the first one, or the one requested by `by`). */
function edge(r: FileReport, name: string, by?: string): NeededRecord {
  const e = r.needed.find((x) => x.name === name && (by === undefined || x.by === by));
  if (!e) throw new Error(`no edge ${name} in ${JSON.stringify(r.needed.map((x) => x.name))}`);
  return e;
}

const pick = (e: NeededRecord) => ({ status: e.status, path: e.path, via: e.via, from: e.from });

describe("tokens and path lists", () => {
  const v = { origin: "/o", lib: "lib/x86_64-linux-gnu", platform: "haswell" };
  it("expands $ORIGIN, ${ORIGIN}, $LIB, $PLATFORM; leaves $ORIGINX and unknown tokens literal", () => {
    expect(expandTokens("$ORIGIN/a:${ORIGIN}X:$LIB:$PLATFORM", v)).toBe("/o/a:/oX:lib/x86_64-linux-gnu:haswell");
    expect(expandTokens("$ORIGINX/$FOO/${LIB", v)).toBe("$ORIGINX/$FOO/${LIB");
  });
  it("drops an element whose known token has no value, keeps empty elements as the CWD", () => {
    expect(runPathDirs("$PLATFORM/x::/a/:/a:/", { ...v, platform: null })).toEqual(["", "/a", "/"]);
    expect(runPathDirs("$ORIGIN/x", { ...v, origin: null })).toBeNull();
    expect(runPathDirs("", v)).toBeNull();
  });
  it("splits LD_LIBRARY_PATH on ':' and ';'; a token without value empties the whole variable", () => {
    expect(libraryPathDirs("/x;/y:", v)).toEqual(["/x", "/y", ""]);
    expect(libraryPathDirs("/x:$ORIGIN/y", { ...v, origin: null })).toEqual([""]);
    expect(libraryPathDirs("", v)).toBeNull();
  });
});

describe("search order", () => {
  it("inherits RPATH through the l_loader chain: libB comes from the executable's RPATH (exp. 1)", () => {
    const r = run("exe_rpath");
    expect(pick(edge(r, "libA.so"))).toEqual({ status: "found", path: `${W}/a/libA.so`, via: "rpath", from: `${W}/exe_rpath` });
    expect(pick(edge(r, "libB.so"))).toEqual({ status: "found", path: `${W}/b/libB.so`, via: "rpath", from: `${W}/exe_rpath` });
    expect(r.status).toBe("ok");
  });

  it("does not inherit RUNPATH: libA's own RPATH, then cache and default dirs, then not found (exp. 2)", () => {
    const r = run("exe_runpath");
    expect(pick(edge(r, "libA.so"))).toMatchObject({ via: "runpath", from: `${W}/exe_runpath` });
    const b = edge(r, "libB.so");
    expect(b.status).toBe("missing");
    expect(b.error).toBe("libB.so: cannot open shared object file: No such file or directory");
    expect(b.searched?.map((s) => `${s.via}:${s.dir}`).slice(0, 3)).toEqual([`rpath:${W}/a/nonexistent`, "cache:ld.so.cache", "default:/lib/x86_64-linux-gnu"]);
    expect(r.missing).toEqual(["libB.so"]);
    expect(r.status).toBe("unresolved");
  });

  it("skips every RPATH when the requester has RUNPATH, even the executable's (exp. 3)", () => {
    const b = edge(run("exe_rpath_librunpath"), "libB.so");
    expect(b.status).toBe("missing");
    expect(b.searched?.[0]).toEqual({ dir: `${W}/a2/nonexistent`, via: "runpath" });
    expect(b.searched?.some((s) => s.via === "rpath")).toBe(false);
  });

  it("walks the chain through an object with RUNPATH to the executable's RPATH (exp. 7a)", () => {
    const r = run("exe_chain");
    expect(pick(edge(r, "libM.so"))).toMatchObject({ via: "runpath", from: `${W}/a3/libA.so` });
    expect(pick(edge(r, "libC.so"))).toEqual({ status: "found", path: `${W}/d/libC.so`, via: "rpath", from: `${W}/exe_chain` });
  });

  it("inherits a library's RPATH down its l_loader chain, through an object with RUNPATH", () => {
    const r = run("exe_inh");
    expect(pick(edge(r, "libY.so"))).toMatchObject({ via: "rpath", from: `${W}/inh/x/libX.so` });
    expect(pick(edge(r, "libW.so"))).toMatchObject({ via: "runpath", from: `${W}/inh/x/../y/libY.so` });
    expect(pick(edge(r, "libZ.so"))).toEqual({ status: "found", path: `${W}/inh/x/../deps/libZ.so`, via: "rpath", from: `${W}/inh/x/libX.so` });
  });

  it("ignores the DT_RPATH of an object that also has DT_RUNPATH, for its grandchildren too (exp. 7b)", () => {
    expect(edge(run("exe_chain_both"), "libC.so").status).toBe("missing");
  });

  it("puts LD_LIBRARY_PATH after the RPATH chain and before RUNPATH (exp. 4)", () => {
    const llp = `${W}/llp`;
    expect(pick(edge(run("exe_b_rpath", { ldLibraryPath: llp }), "libB.so"))).toMatchObject({ path: `${W}/b/libB.so`, via: "rpath" });
    expect(pick(edge(run("exe_b_runpath", { ldLibraryPath: llp }), "libB.so"))).toEqual({ status: "found", path: `${llp}/libB.so`, via: "ld_library_path", from: null });
    expect(pick(edge(run("exe_runpath", { ldLibraryPath: `${W}/b` }), "libB.so"))).toMatchObject({ via: "ld_library_path" });
  });

  it("treats empty elements as the current directory (exp. 5)", () => {
    const a = edge(run("exe_emptyrpath", { cwd: `${W}/a` }), "libA.so");
    expect({ ...pick(a), dir: a.dir }).toEqual({ status: "found", path: "libA.so", via: "rpath", from: `${W}/exe_emptyrpath`, dir: "" });
    const b = edge(run("exe_runpath", { cwd: `${W}/b`, ldLibraryPath: "/nonexistent;" }), "libB.so");
    expect(pick(b)).toEqual({ status: "found", path: "libB.so", via: "ld_library_path", from: null });
  });

  it("loads breadth-first: the first requester's chain decides (exp. 8)", () => {
    const bc = run("bfs/exe_BC");
    expect(pick(edge(bc, "libD.so"))).toMatchObject({ path: `${W}/bfs/libs/../d/libD.so`, via: "rpath", from: `${W}/bfs/libs/libB2.so` });
    expect(edge(bc, "libD.so", `${W}/bfs/libs/libC2.so`).via).toBe("loaded");
    const cb = run("bfs/exe_CB");
    expect(edge(cb, "libD.so", `${W}/bfs/libs/libC2.so`).status).toBe("missing");
    expect(edge(cb, "libD.so", `${W}/bfs/libs/libB2.so`).status).toBe("found");
  });
});

describe("candidates", () => {
  const i386 = hasI386();
  it.skipIf(!i386)("skips a wrong-class candidate and goes on (exp. 6; needs the i386 cross corpus)", () => {
    const r = run("exe_runpath", { ldLibraryPath: `${W}/badclass:${W}/b` });
    expect(pick(edge(r, "libB.so"))).toMatchObject({ status: "found", path: `${W}/b/libB.so`, via: "ld_library_path" });
    const only = edge(run("exe_runpath", { ldLibraryPath: `${W}/badclass` }), "libB.so");
    expect(only).toMatchObject({ status: "missing", error: "libB.so: wrong ELF class: ELFCLASS32" });
  });
  if (!i386) it.todo("wrong-class candidate: skipped because .cache/corpus/cross/libc6-i386 is missing (run test/corpus/build-corpus.sh)");

  it.each([
    ["notelf", "invalid ELF header"],
    ["short", "file too short"],
    ["isdir", "cannot read file data: Error 21"],
  ])("stops the load on a bad candidate in %s/ (exp. 6)", (dir, message) => {
    const r = run("exe_runpath", { ldLibraryPath: `${W}/${dir}:${W}/b` });
    expect(edge(r, "libB.so")).toMatchObject({ status: "fatal", error: `${W}/${dir}/libB.so: ${message}` });
    expect(r.status).toBe("error");
    expect(r.errors).toEqual([`${W}/${dir}/libB.so: ${message}`]);
  });

  it("prefers the best active glibc-hwcaps subdirectory (exp. 9f)", () => {
    const best = activeHwcapsDirs(62).find((l) => l === "x86-64-v3" || l === "x86-64-v2");
    const want = best ? `${W}/hw/glibc-hwcaps/${best}/libB.so` : `${W}/hw/libB.so`;
    expect(pick(edge(run("exe_hw"), "libB.so"))).toMatchObject({ path: want, via: "rpath" });
    expect(edge(run("exe_hw", { hwcapsSubdirs: [] }), "libB.so").path).toBe(`${W}/hw/libB.so`);
  });
});

describe("tokens, symlinks and names with a slash", () => {
  it("expands $LIB, ${ORIGIN}; $ORIGINX stays a literal (relative) directory (exp. 9e)", () => {
    const r = run("exe_dst");
    expect(pick(edge(r, "libA.so"))).toMatchObject({ path: `${W}/dst/${LIB}/libA.so`, via: "rpath" });
    expect(pick(edge(r, "libB.so"))).toMatchObject({ path: `${W}/b/libB.so`, from: `${W}/exe_dst` });
  });

  it("takes a library's $ORIGIN from the path it was opened by, symlinks unresolved (exp. 9g)", () => {
    const r = run("exe_linkdir");
    expect(pick(edge(r, "libB.so"))).toEqual({ status: "found", path: `${W}/linkdir/deps/libB.so`, via: "rpath", from: `${W}/linkdir/libA.so` });
    const v = run("exe_viadir");
    expect(pick(edge(v, "libB.so"))).toEqual({ status: "found", path: `${W}/viadir/deps/libB.so`, via: "rpath", from: `${W}/viadir/libA.so` });
  });

  it("opens a NEEDED with '/' relative to the CWD, and expands $ORIGIN in it (exp. 9a, 9b)", () => {
    expect(pick(edge(run("exe_rel", { cwd: W }), "b/libB.so"))).toEqual({ status: "found", path: "b/libB.so", via: "direct", from: null });
    expect(edge(run("exe_rel", { cwd: "/" }), "b/libB.so").status).toBe("missing");
    expect(edge(run("exe_orig"), "$ORIGIN/../b/libB.so").path).toBe(`${W}/a_orig/../b/libB.so`);
  });

  it("satisfies a bare name with the SONAME of an object opened by path (exp. 9c)", () => {
    const r = run("exe_soname");
    expect(pick(edge(r, `${W}/b/libB.so`))).toMatchObject({ via: "direct", path: `${W}/b/libB.so` });
    expect(pick(edge(r, "libB.so"))).toMatchObject({ via: "loaded", path: `${W}/b/libB.so` });
  });

  it("with DF_1_NODEFLIB rejects cache hits in default dirs and skips them (exp. 9d)", () => {
    const z = edge(run("exe_ndl"), "libz.so.1");
    expect(z.status).toBe("missing");
    expect(z.searched?.map((s) => s.via)).toEqual(["cache"]);
    const noCache = { cachePath: null, defaultDirs: ["/usr/lib/x86_64-linux-gnu"] };
    expect(edge(run("exe_ndl", noCache), "libz.so.1").status).toBe("missing");
    const png = new Resolver({ mode: "exec", ...noCache }).resolve("/usr/lib/x86_64-linux-gnu/libpng16.so.16");
    expect(pick(edge(png, "libz.so.1"))).toMatchObject({ via: "default", path: "/usr/lib/x86_64-linux-gnu/libz.so.1" });
  });
});

describe("versions, contexts and caching", () => {
  it("reports a version the first library found lacks, as the loader words it", () => {
    const r = run("exe_needs_v2");
    expect(edge(r, "libx.so")).toMatchObject({ path: `${W}/v1/libx.so`, missingVersions: ["VER_2"] });
    expect(r.errors).toEqual([`${W}/v1/libx.so: version \`VER_2' not found (required by ${W}/exe_needs_v2)`]);
    expect(r.status).toBe("unresolved");
    expect(run("exe_v2_ok").status).toBe("ok");
  });

  it("dlopen: the root has no l_loader; the --exe program's RPATH and loaded set apply (exp. 16)", () => {
    const lib = `${W}/a/libA.so`;
    expect(edge(new Resolver().resolve(lib), "libB.so").status).toBe("missing");
    const viaExe = new Resolver({ exe: `${W}/exe_rpath` }).resolve(`${W}/a2/libA.so`);
    expect(pick(edge(viaExe, "libB.so"))).toMatchObject({ via: "loaded", path: `${W}/b/libB.so` });
    const rpathOnly = new Resolver({ exe: `${W}/exe_b_rpath` }).resolve(lib);
    expect(pick(edge(rpathOnly, "libB.so"))).toMatchObject({ via: "loaded" });
    const c2 = `${W}/bfs/libs/libC2.so`;
    const exeRpath = new Resolver({ exe: `${W}/exe_dl` }).resolve(c2);
    expect(pick(edge(exeRpath, "libD.so"))).toEqual({ status: "found", path: `${W}/bfs/d/libD.so`, via: "rpath", from: `${W}/exe_dl` });
    expect(edge(new Resolver({ exe: `${W}/exe_dl_runpath` }).resolve(c2), "libD.so").status).toBe("missing");
    const noInherit = new Resolver({ exe: `${W}/exe_runpath` });
    expect(edge(noInherit.resolve(lib), "libB.so").status).toBe("missing");
    expect(noInherit.contextErrors).toEqual(["libB.so: cannot open shared object file: No such file or directory"]);
  });

  it("dlopen mode resolves a program (PIE or ET_EXEC) as its own main program, not inside --exe", () => {
    const r = new Resolver({ exe: `${W}/exe_b_rpath` }).resolve(`${W}/exe_rpath`);
    expect(pick(edge(r, "libB.so"))).toEqual({ status: "found", path: `${W}/b/libB.so`, via: "rpath", from: `${W}/exe_rpath` });
  });

  it("--root: default dirs and absolute symlinks resolve inside the root; paths are the target's", () => {
    const root = path.join(tmp, "root");
    fs.mkdirSync(path.join(root, "usr/lib/x86_64-linux-gnu"), { recursive: true });
    fs.mkdirSync(path.join(root, "opt"));
    fs.symlinkSync("/usr/lib", path.join(root, "lib"));
    fs.copyFileSync(`${W}/b/libB.so`, path.join(root, "usr/lib/x86_64-linux-gnu/libB.so"));
    fs.copyFileSync(`${W}/exe_b_runpath`, path.join(root, "opt/exe"));
    const r = new Resolver({ mode: "exec", root }).resolve(path.join(root, "opt/exe"));
    expect(r.path).toBe("/opt/exe");
    expect(pick(edge(r, "libB.so"))).toEqual({ status: "found", path: "/lib/x86_64-linux-gnu/libB.so", via: "default", from: null });
    expect(edge(r, "libc.so.6").status).toBe("missing");
  });

  it("reads each directory and each candidate once across files", () => {
    const res = new Resolver({ mode: "exec" });
    res.resolve(`${W}/exe_hw`);
    const first = res.stats();
    expect(res.stats()).toEqual(first);
    res.resolve(`${W}/exe_rpath`);
    expect(res.stats().filesOpened).toBe(first.filesOpened + 2); // exe_rpath and b/libB.so
    expect(first.dirsListed).toBeLessThan(25);
  });
});
