/**
 * `npm start`: builds a small venv-like demo tree in a temp dir (C sources from fixtures/src
 * compiled with gcc, plus copies of system libraries), then runs the batch patcher with the seed
 * recipe twice — force DT_RPATH, add a Nix-profile-like lib dir, shrink to `$ORIGIN` and the
 * profile — and prints what it did (the second run must change nothing), then where every
 * DT_NEEDED resolves. The temp dir is removed.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { attachResolution } from "../batch/resolution.js";
import { runBatch } from "../batch/run.js";
import type { BatchSpec } from "../batch/process-file.js";
import { defaultJobs } from "../pool/pool.js";
import { renderSummary } from "./render.js";

/** The checkout: the directory above this file that holds fixtures/src (build/js has a package.json of its own). */
function findRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, "fixtures", "src"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("fixtures/src not found above " + __dirname);
    dir = up;
  }
  return dir;
}

function gcc(args: string[]): boolean {
  try {
    execFileSync("gcc", args, { stdio: "pipe" });
    return true;
  } catch {
    return false;
  }
}

/**
 * site-packages/demo/{_ext.so, _native.so, libz.so.1}, site-packages/demo.libs/libdep.so and a
 * profile dir nix/profile/lib holding libdep.so.1 (what the profile "provides").
 */
function buildTree(dir: string): { profileRoot: string; profile: string } {
  const src = join(findRoot(), "fixtures", "src");
  const pkg = join(dir, "site-packages", "demo");
  const libs = join(dir, "site-packages", "demo.libs");
  const profileRoot = join(dir, "nix", "profile");
  const profile = join(profileRoot, "lib");
  for (const d of [pkg, libs, profile]) mkdirSync(d, { recursive: true });
  const placeholder = "/build/placeholder/rpath/left/by/the/wheel/builder";
  const built =
    gcc(["-shared", "-fPIC", "-o", join(libs, "libdep.so"), "-Wl,-soname,libdep.so", join(src, "dep.c")]) &&
    gcc(["-shared", "-fPIC", "-o", join(profile, "libextra.so"), "-Wl,-soname,libextra.so", join(src, "extra.c")]) &&
    gcc(["-shared", "-fPIC", "-o", join(pkg, "_ext.so"), join(src, "main.c"), join(libs, "libdep.so"),
      "-Wl,--enable-new-dtags", `-Wl,-rpath,${placeholder}:$ORIGIN/../demo.libs`]) &&
    gcc(["-shared", "-fPIC", "-o", join(pkg, "_native.so"), join(src, "main.c"), "-Wl,--no-as-needed", join(libs, "libdep.so"),
      join(profile, "libextra.so"), "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../demo.libs"]);
  if (!built) console.log("(gcc not found: the demo tree holds copies of system libraries only)");
  for (const lib of ["libz.so.1", "libdl.so.2"]) {
    const from = join("/usr/lib/x86_64-linux-gnu", lib);
    if (existsSync(from)) copyFileSync(from, join(pkg, lib));
  }
  if (existsSync(join(pkg, "libz.so.1"))) symlinkSync("libz.so.1", join(pkg, "libz.so"));
  return { profileRoot, profile };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "elfpatch-demo-"));
  try {
    const { profileRoot, profile } = buildTree(dir);
    const tree = join(dir, "site-packages");
    const spec: BatchSpec = {
      req: {},
      rpath: { force: true, add: [profile], shrink: true, allowedPrefixes: ["$ORIGIN", profileRoot] },
    };
    const rel = (p: string): string => relative(dir, p);
    console.log(`Demo venv: ${dir}`);
    console.log(`elfpatch patch --force-rpath --add-rpath ${rel(profile)} --shrink-rpath \\`);
    console.log(`    --allowed-rpath-prefixes '$ORIGIN:${rel(profileRoot)}' site-packages\n`);
    for (const round of [1, 2]) {
      const { records, summary } = await runBatch([tree], spec, { jobs: defaultJobs() });
      console.log(round === 1 ? "First run:" : "\nSecond run (the fixed point: nothing to do):");
      for (const r of records) {
        const what = r.status === "skipped" ? `skipped (${r.skipReason})` : r.status === "failed" ? `failed: ${r.error?.code}` :
          r.status === "unchanged" ? "unchanged" : `patched (${r.strategy}${r.bytesAdded ? `, +${r.bytesAdded} bytes` : ""})`;
        const rp = r.after?.rpath ?? r.after?.runpath;
        console.log(`  ${rel(r.path)}: ${what}${rp !== undefined && rp !== null ? `  rpath=${JSON.stringify(rp.replaceAll(dir, "<demo>"))}` : ""}`);
      }
      console.log(`  ${renderSummary(summary)}`);
      if (round === 2) {
        // The second half of the product: where every DT_NEEDED now resolves, by glibc's rules.
        attachResolution(records);
        console.log("\nResolution report (elfpatch check):");
        for (const r of records.filter((x) => x.resolution)) {
          const where = (p: string | null): string => (p === null ? "NOT FOUND" : p.startsWith(dir) ? rel(p) : p);
          const libs = r.resolution!.needed.map((n) => `${n.name} => ${where(n.path)} (${n.via ?? "-"})`);
          console.log(`  ${rel(r.path)}: ${r.resolution!.status}${libs.length ? `; ${libs.join(", ")}` : ""}`);
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
