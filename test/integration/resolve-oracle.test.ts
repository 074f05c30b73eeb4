/**
 * The static resolver (src/resolve/) against glibc's own answers, differentially:
 * 1. Corpus: every ELF file under /usr/lib/x86_64-linux-gnu and the Python site-packages
 *    (test/corpus/list.ts, groups `host` and `wheels`) resolved as `ld.so --list FILE` does (the file
 *    is the main program, `$ORIGIN` from the path as given): the loaded objects with their paths in
 *    load order, the loader's messages (version gaps, "no version information"), and for a file the
 *    loader refuses, its message. `ld.so --list` stops at the first missing library (exit 127);
 *    for those files the whole list is also compared with trace mode (`LD_TRACE_LOADED_OBJECTS=1`,
 *    what ldd uses), which fakes missing libraries and goes on, as the resolver does. Agreement must
 *    be 100%; EXCEPTIONS lists any file that may differ, with the reason (none today).
 * 2. Fixture programs (test/support/resolve-fixtures.ts) run with `LD_DEBUG=libs,files`: for every
 *    searched DT_NEEDED, the source the loader used (RPATH/RUNPATH from which file, LD_LIBRARY_PATH,
 *    cache, system search path) and the file, against the resolver's `via`/`from`/`path`.
 * 3. Failures: programs that do not start print the message the resolver gives (missing library,
 *    NODEFLIB, the missing version `VER_2`); dlopen of a library agrees with dlopen mode.
 * 4. `elfpatch check` (in process): exit codes, text, --tree and the NDJSON summary.
 * ld.so runs in a small pool of child processes (the corpus takes a few seconds on 2 cores).
 */
import { execFile } from "node:child_process";
import * as os from "node:os";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { createProgram, type CliIo } from "../../src/cli/program.js";
import { Resolver } from "../../src/resolve/resolver.js";
import type { FileReport, NeededRecord } from "../../src/resolve/types.js";
import { listCorpus } from "../corpus/list.js";
import { listLines, pool, resolverLines, type Run } from "../support/ldso-list.js";
import { dlopenCheck, LDSO } from "../support/oracle.js";
import { buildResolveFixtures } from "../support/resolve-fixtures.js";

/** Files whose resolution may legitimately differ from ld.so's, with the reason. */
const EXCEPTIONS: Record<string, string> = {};

function exec(file: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    const opts = { encoding: "utf8" as const, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, maxBuffer: 1 << 24, ...(cwd ? { cwd } : {}) };
    execFile(file, args, opts, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ status: code, stdout, stderr });
    });
  });
}

/** stderr lines without the `argv0: ` prefix (and "error while loading shared libraries: "). */
function loaderMessages(stderr: string, argv0: string): string[] {
  return stderr.split("\n").filter((l) => l !== "").map((l) =>
    (l.startsWith(`${argv0}: `) ? l.slice(argv0.length + 2) : l).replace(/^error while loading shared libraries: /, ""));
}

/** What is different between the resolver and `ld.so --list` (and trace mode) for one file. */
async function compare(file: string, mine: FileReport, list: Run): Promise<string | null> {
  const theirs = loaderMessages(list.stderr, file);
  if (list.status === 127) {
    const first = mine.needed.find((e) => e.status === "missing" || e.status === "fatal");
    const want = mine.status === "not-loadable" ? mine.errors[0] : first?.error;
    if (theirs.join("\n") !== want) return `ld.so failed with ${JSON.stringify(theirs)}, the resolver expects ${want}`;
    if (mine.status === "not-loadable" || first?.status === "fatal") return null;
    const trace = await exec(LDSO, [file], { LD_TRACE_LOADED_OBJECTS: "1" });
    return same("trace list", listLines(trace.stdout), resolverLines(mine));
  }
  const listed = listLines(list.stdout);
  if (listed === "static") return mine.needed.length === 0 ? null : "ld.so says statically linked";
  return same("list", listed, resolverLines(mine)) ?? same("messages", theirs.sort(), [...mine.errors, ...mine.warnings].sort());
}

function same(what: string, theirs: unknown, mine: unknown): string | null {
  const a = JSON.stringify(theirs);
  const b = JSON.stringify(mine);
  return a === b ? null : `${what} differs:\n  ld.so:    ${a}\n  resolver: ${b}`;
}

const width = Math.max(2, Math.min(4, os.availableParallelism()));

describe("corpus: the resolver agrees with ld.so --list", () => {
  const groups = listCorpus().filter((g) => g.name === "host" || g.name === "wheels");
  for (const g of groups) {
    it.skipIf(g.files.length === 0)(`${g.name}: ${g.files.length} files`, async () => {
      const t0 = performance.now();
      const runs = await pool(g.files, width, (f) => exec(LDSO, ["--list", f]));
      const t1 = performance.now();
      const resolver = new Resolver({ mode: "list" });
      const reports = g.files.map((f) => resolver.resolve(f));
      const t2 = performance.now();
      const mismatches: string[] = [];
      for (let i = 0; i < g.files.length; i++) {
        const diff = await compare(g.files[i]!, reports[i]!, runs[i]!);
        if (diff && !EXCEPTIONS[g.files[i]!]) mismatches.push(`${g.files[i]}: ${diff}`);
      }
      const edges = reports.reduce((n, r) => n + r.needed.length, 0);
      console.log(`${g.name}: ${g.files.length} files, ${edges} edges; ${mismatches.length} mismatches; ` +
        `ld.so ${Math.round(t1 - t0)} ms (${width} processes), resolver ${Math.round(t2 - t1)} ms; ` +
        `statuses ${JSON.stringify(countBy(reports.map((r) => r.status)))}`);
      expect(mismatches.slice(0, 10)).toEqual([]);
    });
  }
});

function countBy(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

// ---- fixture programs under LD_DEBUG ------------------------------------------------------------

interface Found {
  name: string;
  by: string;
  via: string;
  from: string | null;
  path: string;
}

const LABELS: [RegExp, string][] = [
  [/\t\t\(RPATH from file (.*)\)$/, "rpath"],
  [/\t\t\(RUNPATH from file (.*)\)$/, "runpath"],
  [/\t\t\(LD_LIBRARY_PATH\)$/, "ld_library_path"],
  [/\t\t\(system search path\)$/, "default"],
  [/^ search cache=/, "cache"],
];

/** Every searched DT_NEEDED in an `LD_DEBUG=libs,files` log: who needed it, the source, the file. */
function parseDebug(log: string): Found[] {
  const out: Found[] = [];
  let by = "";
  let cur: { name: string; via: string; from: string | null; path: string } | null = null;
  for (const raw of log.split("\n")) {
    const line = raw.replace(/^\s*\d+:\s?/, "");
    const needed = /^file=(\S+) \[0\];  needed by (.*) \[0\]$/.exec(line);
    if (needed) by = needed[2]!;
    const find = /^find library=(\S+) \[0\]; searching$/.exec(line);
    if (find) cur = { name: find[1]!, via: "", from: null, path: "" };
    for (const [re, via] of LABELS) {
      const m = re.exec(line);
      if (m && cur) [cur.via, cur.from] = [via, m[1] ?? null];
    }
    const trying = /^ {2}trying file=(.*)$/.exec(line);
    if (trying && cur) cur.path = trying[1]!;
    const mapped = /^file=(\S+) \[0\];  generating link map$/.exec(line);
    if (mapped && cur && mapped[1] === cur.name) {
      out.push({ ...cur, by });
      cur = null;
    }
  }
  return out;
}

function searched(r: FileReport): Found[] {
  const kinds = ["rpath", "runpath", "ld_library_path", "cache", "default"];
  return r.needed.filter((e): e is NeededRecord & { via: string; path: string } => e.via !== null && kinds.includes(e.via))
    .map((e) => ({ name: e.name, by: e.by, via: e.via, from: e.from, path: e.path }));
}

describe("fixture programs: the resolver's via/from/path equal LD_DEBUG=libs", () => {
  let W: string;
  beforeAll(() => {
    W = buildResolveFixtures();
  });

  /**
   * `quirk`: LD_DEBUG names a directory's source by the first list that registered it (loader.md
   * §4, exp. 6), not by the list being searched. The executable's run path is registered first, so
   * `a3` (libA's RUNPATH, also in exe_chain's RPATH) prints as RPATH, and `b` (LD_LIBRARY_PATH,
   * also in exe_runpath's RUNPATH) as RUNPATH. The resolver reports the real source; the file agrees.
   */
  interface Case { llp?: string; cwd?: string; quirk?: { lib: string; via: string; from: string } }
  const cases: [string, Case][] = [
    ["exe_rpath", {}], ["exe_inh", {}], ["exe_chain", { quirk: { lib: "libM.so", via: "rpath", from: "exe_chain" } }], ["bfs/exe_BC", {}],
    ["exe_hw", {}], ["exe_linkdir", {}], ["exe_viadir", {}], ["exe_dst", {}], ["exe_soname", {}], ["exe_orig", {}],
    ["exe_rel", { cwd: "." }], ["exe_b_rpath", { llp: "llp" }], ["exe_b_runpath", { llp: "llp" }],
    ["exe_runpath", { llp: "llp" }], ["exe_runpath", { llp: "badclass:llp" }], ["exe_v2_ok", {}], ["exe_dl", {}],
    ["exe_runpath", { llp: "b", quirk: { lib: "libB.so", via: "runpath", from: "exe_runpath" } }],
  ];
  it.each(cases)("%s %j", async (exe, o) => {
    const file = path.join(W, exe);
    const llp = o.llp?.split(":").map((d) => path.join(W, d)).join(":");
    const cwd = o.cwd ? path.join(W, o.cwd) : W;
    const r = await exec(file, [], { LD_DEBUG: "libs,files", ...(llp ? { LD_LIBRARY_PATH: llp } : {}) }, cwd);
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    const mine = new Resolver({ mode: "exec", ldLibraryPath: llp ?? null, cwd }).resolve(file);
    expect(mine.status).toBe("ok");
    const q = o.quirk;
    const want = searched(mine).map((f) => (q && f.name === q.lib ? { ...f, via: q.via, from: path.join(W, q.from) } : f));
    if (q) expect(want).not.toEqual(searched(mine));
    expect(parseDebug(r.stderr)).toEqual(want);
    expect(want.length).toBeGreaterThan(0);
  });

  it.each([
    ["exe_runpath", {}], ["exe_rpath_librunpath", {}], ["exe_chain_both", {}], ["bfs/exe_CB", {}], ["exe_ndl", {}],
    ["exe_runpath", { LD_LIBRARY_PATH: "notelf:b" }], ["exe_runpath", { LD_LIBRARY_PATH: "short:b" }],
    ["exe_runpath", { LD_LIBRARY_PATH: "isdir:b" }], ["exe_runpath", { LD_LIBRARY_PATH: "badclass" }],
  ])("%s %j does not start; the loader's message is the resolver's", async (exe, env: { LD_LIBRARY_PATH?: string }) => {
    const file = path.join(W, exe);
    const llp = env.LD_LIBRARY_PATH?.split(":").map((d) => path.join(W, d)).join(":");
    const r = await exec(file, [], llp ? { LD_LIBRARY_PATH: llp } : {});
    expect(r.status).toBe(127);
    const mine = new Resolver({ mode: "exec", ldLibraryPath: llp ?? null }).resolve(file);
    const first = mine.needed.find((e) => e.status === "missing" || e.status === "fatal");
    expect(loaderMessages(r.stderr, file)).toEqual([first?.error]);
  });

  it("a version the first library found lacks: the program fails with the resolver's message", async () => {
    const file = path.join(W, "exe_needs_v2");
    const r = await exec(file, []);
    expect(r.status).toBe(1);
    const mine = new Resolver({ mode: "exec" }).resolve(file);
    expect(loaderMessages(r.stderr, file)).toEqual(mine.errors);
    expect(mine.errors).toEqual([`${W}/v1/libx.so: version \`VER_2' not found (required by ${file})`]);
  });

  it("dlopen of a library agrees with dlopen mode (no l_loader; the program's RPATH does not help)", () => {
    const res = new Resolver();
    for (const lib of ["a/libA.so", "a2/libA.so", "bfs/libs/libB2.so", "bfs/libs/libC2.so", "a_ndl/libA.so", "v2/libx.so"]) {
      const file = path.join(W, lib);
      const real = dlopenCheck(file);
      const mine = res.resolve(file);
      const first = mine.needed.find((e) => e.status !== "found" && e.status !== "skipped");
      expect({ lib, ok: real.ok, message: real.ok ? "" : real.message }).toEqual({ lib, ok: mine.status === "ok", message: first?.error ?? "" });
    }
  });
});

// ---- the CLI ----------------------------------------------------------------------------------

async function cli(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const res = { code: 0, out: [] as string[], err: [] as string[] };
  const io: CliIo = {
    out: (l) => res.out.push(l), err: (l) => res.err.push(l), setExitCode: (c) => { res.code = c; },
    usage: (m) => { res.err.push(m); res.code = 2; },
  };
  await createProgram(io).parseAsync(["node", "elfpatch", "check", ...args]);
  return res;
}

describe("elfpatch check", () => {
  let W: string;
  beforeAll(() => {
    W = buildResolveFixtures();
  });

  it("exits 0 when everything resolves, 1 on a missing version, with the loader's message", async () => {
    expect((await cli([`${W}/exe_v2_ok`])).code).toBe(0);
    const bad = await cli([`${W}/exe_needs_v2`, `${W}/exe_v2_ok`]);
    expect(bad.code).toBe(1);
    expect(bad.out).toEqual([`${W}/exe_needs_v2: ${W}/v1/libx.so: version \`VER_2' not found (required by ${W}/exe_needs_v2)`]);
  });

  it("--json: one record per file and a summary of missing libraries, versions and search dirs", async () => {
    const r = await cli(["--json", `${W}/bfs/libs`, `${W}/exe_needs_v2`]);
    expect(r.code).toBe(1);
    const records = r.out.map((l) => JSON.parse(l) as { type: string; path: string });
    expect(records.map((x) => x.type)).toEqual(["file", "file", "file", "summary"]);
    const summary = records[3] as unknown as Record<string, unknown>;
    expect(summary.missingLibraries).toEqual([{ name: "libD.so", count: 1, examples: [`${W}/bfs/libs/libC2.so`] }]);
    expect(summary.versionGaps).toEqual([{ version: "VER_2", provider: `${W}/v1/libx.so`, count: 1, examples: [`${W}/exe_needs_v2`] }]);
    expect(summary.searchDirs).toContainEqual({ dir: `${W}/bfs/libs/../d`, via: "rpath", served: 1 });
    expect(summary.unusedDirs).toContainEqual({ dir: `${W}/v2`, via: "rpath", owners: [`${W}/exe_needs_v2`] });
  });

  it("--exe: the program's RPATH applies to each file; --tree prints the reasons", async () => {
    const r = await cli(["--tree", "--exe", `${W}/exe_dl`, `${W}/bfs/libs/libC2.so`]);
    expect(r.code).toBe(0);
    expect(r.out[0]).toBe(`${W}/bfs/libs/libC2.so`);
    expect(r.out).toContain(`└── libD.so => ${W}/bfs/d/libD.so [rpath of ${W}/exe_dl]`);
    const llp = await cli(["--ld-library-path", `${W}/bfs/d`, `${W}/bfs/libs/libC2.so`]);
    expect(llp.code).toBe(0);
  });
});
