/**
 * `npm start`: builds a small venv-like demo tree in a temp dir (C sources from fixtures/src
 * compiled with gcc, plus copies of system libraries), runs the patcher over it twice (the second
 * run must change nothing) and prints the report. The temp dir is removed afterwards.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { inspectFile, isFileError, patchFile } from "../index.js";
import type { EditRequest } from "../core/types.js";

const root = findRoot();
const src = join(root, "fixtures", "src");

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) dir = dirname(dir);
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

/** Lays out site-packages/demo/{_ext.so, libz.so.1} and site-packages/demo.libs/libdep.so. */
function buildTree(dir: string): string[] {
  const pkg = join(dir, "site-packages", "demo");
  const libs = join(dir, "site-packages", "demo.libs");
  mkdirSync(pkg, { recursive: true });
  mkdirSync(libs, { recursive: true });
  const placeholder = "/build/placeholder/rpath/left/by/the/wheel/builder";
  const built =
    gcc(["-shared", "-fPIC", "-o", join(libs, "libdep.so"), "-Wl,-soname,libdep.so", join(src, "dep.c")]) &&
    gcc(["-shared", "-fPIC", "-o", join(pkg, "_ext.so"), join(src, "main.c"), join(libs, "libdep.so"),
      "-Wl,--enable-new-dtags", `-Wl,-rpath,${placeholder}:$ORIGIN/../demo.libs`]);
  if (!built) console.log("(gcc not found: the demo tree holds copies of system libraries only)");
  for (const lib of ["libz.so.1", "libdl.so.2"]) {
    const from = join("/usr/lib/x86_64-linux-gnu", lib);
    if (existsSync(from)) copyFileSync(from, join(pkg, lib));
  }
  return walk(dir);
}

function walk(dir: string): string[] {
  return readdirSync(dir).sort().flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function run(files: string[], base: string, req: EditRequest): void {
  for (const f of files) {
    const r = patchFile(f, req);
    const name = relative(base, f);
    if (isFileError(r)) console.log(`  ${name}: ${r.error.code} (${r.error.message})`);
    else if (!r.changed) console.log(`  ${name}: unchanged`);
    else console.log(`  ${name}: patched, rpath ${JSON.stringify(r.after?.rpath)}, flags_1 [${r.after?.flags1.join(" ")}]`);
  }
}

const dir = mkdtempSync(join(tmpdir(), "elfpatch-demo-"));
try {
  const files = buildTree(dir);
  console.log(`Demo tree: ${dir}`);
  for (const f of files) {
    const i = inspectFile(f);
    if (!isFileError(i)) {
      console.log(`  ${relative(dir, f)}: ELF${i.class} ${i.type} needs [${i.needed.join(", ")}]` +
        (i.runpath !== null ? ` runpath ${JSON.stringify(i.runpath)}` : "") + (i.rpath !== null ? ` rpath ${JSON.stringify(i.rpath)}` : ""));
    }
  }
  const req: EditRequest = { setRpath: "$ORIGIN/../demo.libs", rpathTag: "rpath" };
  const ext = files.filter((f) => f.endsWith("_ext.so"));
  console.log("\nelfpatch patch --force-rpath --set-rpath '$ORIGIN/../demo.libs' (extension modules):");
  run(ext, dir, req);
  console.log("\nSame command again (must change nothing):");
  run(ext, dir, req);
  console.log("\nelfpatch patch --no-default-lib (every ELF file):");
  run(files, dir, { noDefaultLib: true });
  console.log("\nSame command again:");
  run(files, dir, { noDefaultLib: true });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
