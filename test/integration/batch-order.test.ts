/**
 * A transitive shrink looks at other files of the batch (what a dependency's own run path serves),
 * so its answer must not depend on whether the run edited that dependency before or after the file
 * (shards go largest first, threads race): every thread resolves the batch's files as the batch
 * leaves them. Then one run reaches the fixed point (the next run changes nothing), and the write
 * modes give the same bytes.
 *
 * The tree (built here with gcc): `libtop.so` (large, so it comes first) needs `libdep.so`, found
 * through its run path `$ORIGIN/sub`; `libdep.so` needs libm. The recipe forces DT_RPATH, adds a
 * profile directory that provides libm, and shrinks. `libdep.so` keeps the profile (it provides its
 * NEEDED). `libtop.so` needs it only if libdep's libm would otherwise come through libtop's
 * inherited DT_RPATH, which is so for libdep as it is before the run, and not after: the answer is
 * that libtop drops it. Seen unpatched, libtop kept it, and the next run dropped it.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";
import { has, ldsoList } from "../support/oracle.js";

const CLI = path.join(repoRoot, "build", "js", "cli", "main.js");
const LIBM = "/usr/lib/x86_64-linux-gnu/libm.so.6";
const READY = has("gcc") && fs.existsSync(LIBM);

let work: string;
let orig: string;
let profile: string;

interface Rec {
  type: string;
  path: string;
  status: string;
  after?: { rpath: string | null; runpath: string | null };
}

function patch(tree: string, extra: string[] = []): { status: number | null; records: Rec[]; summary: Record<string, unknown> } {
  const r = spawnSync(
    process.execPath,
    [CLI, "patch", "--json", "--no-resolve", "--no-cache", "--no-progress", "--force-rpath", "--add-rpath", profile, "--shrink-rpath", ...extra, tree],
    { encoding: "utf8" },
  );
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Rec & Record<string, unknown>);
  const summary = lines.pop()!;
  return { status: r.status, records: lines, summary };
}

function hashes(tree: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of ["libtop.so", "sub/libdep.so"]) out[rel] = createHash("sha256").update(fs.readFileSync(path.join(tree, rel))).digest("hex");
  return out;
}

function fresh(name: string): string {
  const dir = path.join(work, name);
  fs.cpSync(orig, dir, { recursive: true });
  return dir;
}

beforeAll(() => {
  if (!READY) return;
  work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-order-")));
  orig = path.join(work, "orig");
  fs.mkdirSync(path.join(orig, "sub"), { recursive: true });
  const src = path.join(work, "src");
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, "dep.c"), "#include <math.h>\ndouble dep(double x) { return sqrt(x) + cos(x); }\n");
  // A large initialised array puts libtop first in the run (shards go largest first).
  fs.writeFileSync(path.join(src, "top.c"), "double dep(double);\nchar big[1 << 20] = {1};\ndouble top(double x) { return dep(x) + big[0]; }\n");
  execFileSync("gcc", ["-shared", "-fPIC", "-O1", "-o", path.join(orig, "sub", "libdep.so"), path.join(src, "dep.c"), "-Wl,--no-as-needed", "-lm"]);
  execFileSync("gcc", [
    "-shared", "-fPIC", "-O1", "-o", path.join(orig, "libtop.so"), path.join(src, "top.c"),
    "-L", path.join(orig, "sub"), "-Wl,--no-as-needed", "-ldep", "-Wl,-rpath,$ORIGIN/sub",
  ]);
  expect(fs.statSync(path.join(orig, "libtop.so")).size).toBeGreaterThan(fs.statSync(path.join(orig, "sub", "libdep.so")).size);
  profile = path.join(work, "profile", "lib");
  fs.mkdirSync(profile, { recursive: true });
  fs.symlinkSync(LIBM, path.join(profile, "libm.so.6"));
});

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!READY)("a batch whose files' decisions depend on each other", () => {
  it("one run reaches the fixed point: the dependent sees its dependency as the batch leaves it", () => {
    const tree = fresh("j1");
    const first = patch(tree, ["-j", "1"]);
    expect(first.status).toBe(0);
    const byName = new Map(first.records.map((r) => [path.relative(tree, r.path), r]));
    expect(byName.get("sub/libdep.so")).toMatchObject({ status: "patched", after: { rpath: profile, runpath: null } });
    // libtop's only NEEDED comes through $ORIGIN/sub, and libdep's libm through libdep's own DT_RPATH.
    expect(byName.get("libtop.so")).toMatchObject({ status: "patched", after: { rpath: "$ORIGIN/sub", runpath: null } });
    const again = patch(tree, ["-j", "1"]);
    expect(again.status).toBe(0);
    expect(again.summary).toMatchObject({ patched: 0, unchanged: 2 });

    // The loader agrees: libdep is found through libtop's run path, libm through libdep's.
    const list = ldsoList(path.join(tree, "libtop.so"));
    expect(list.status, list.stderr).toBe(0);
    expect(list.libs.get("libdep.so")).toBe(path.join(tree, "sub", "libdep.so"));
    expect(list.libs.get("libm.so.6")).toBe(path.join(profile, "libm.so.6"));
  });

  // (With two small files no worker starts, so this checks the write modes, not thread timing;
  // the corpus runs in BENCHMARKS.md compare -j 1 and -j 2 with workers.)
  it("-j 2 and --in-place give the same bytes as -j 1", () => {
    const want = hashes((() => {
      const t = fresh("ref");
      expect(patch(t, ["-j", "1"]).status).toBe(0);
      return t;
    })());
    for (const extra of [["-j", "2"], ["-j", "2", "--in-place"], ["-j", "1", "--in-place"]]) {
      const t = fresh(extra.join("").replace(/-/g, ""));
      const r = patch(t, extra);
      expect(r.status, extra.join(" ")).toBe(0);
      expect(hashes(t), extra.join(" ")).toEqual(want);
    }
  });
});
