/**
 * Builds the resolver's fixture tree (loader.md §18's experiments, rebuilt from
 * fixtures/resolve/*.c) with gcc into `<repo>/.cache/resolve-fixtures/<hash>/`, where the hash
 * covers the sources, the steps below, `gcc --version` and whether the i386 library exists. A
 * finished tree is never changed: tests only read it (run programs, resolve, list).
 *
 * Layout (W = the tree):
 * - `b/libB.so`, `llp/libB.so` (another libB), `a/libA.so` (RPATH `$ORIGIN/nonexistent`, needs libB),
 *   `a2/libA.so` (the same with RUNPATH);
 * - `exe_rpath`/`exe_runpath` (`$ORIGIN/a:$ORIGIN/b`), `exe_rpath_librunpath` (RPATH to `a2`),
 *   `exe_emptyrpath` (RPATH `:/nonexistent`), `exe_b_rpath`/`exe_b_runpath` (need libB, `$ORIGIN/b`);
 * - bad candidates named libB.so: `badclass/` (an i386 library, when the cross corpus has one),
 *   `notelf/` (a linker script), `short/` (13 bytes), `isdir/` (a directory);
 * - chains: `exe_chain` -> `a3/libA.so` (RUNPATH) -> `libM` -> `d/libC.so` (via the exe's RPATH);
 *   `exe_chain_both`: `a5/libA.so` has DT_RUNPATH and DT_RPATH (a DT_AUDIT retagged);
 * - dlopen hosts `exe_dl`/`exe_dl_runpath` (need libC; RPATH/RUNPATH `$ORIGIN/d:$ORIGIN/bfs/d`);
 * - `exe_inh` (RUNPATH) -> `inh/x/libX.so` (RPATH `../y:../deps`) -> `inh/y/libY.so` (RUNPATH
 *   `../w`) -> `inh/w/libW.so` -> `inh/deps/libZ.so`, found only through libX's RPATH, inherited
 *   through libY;
 * - `bfs/exe_BC`, `bfs/exe_CB`: libB2 (RPATH to `../d`) and libC2 both need libD;
 * - `exe_ndl` -> `a_ndl/libA.so` (DF_1_NODEFLIB) -> libz.so.1;
 * - `exe_hw` finds libB in `hw/glibc-hwcaps/x86-64-v{2,3}/` or `hw/`;
 * - `exe_linkdir` -> `linkdir/libA.so` (a symlink to `../a_org/libA.so`, RPATH `$ORIGIN/deps`);
 *   `exe_viadir` -> `viadir/libA.so` (`viadir` a symlink to `realdir/x`);
 * - `exe_dst`: RPATH with `$PLATFORM`, `${ORIGIN}`, `$LIB`, `$ORIGINX`; libA in `dst/<$LIB>/`;
 * - NEEDED with `/`: `exe_rel` (`b/libB.so`), `exe_orig` (`$ORIGIN/../b/libB.so`), `exe_soname`
 *   (NEEDED `<W>/b/libB.so` first, then libA, whose `libB.so` matches that SONAME);
 * - versions: `exe_needs_v2` (RPATH `$ORIGIN/v1:$ORIGIN/v2`, v1 lacks VER_2), `exe_v2_ok`.
 */
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { crossPackageDir, crossPackageReady } from "../corpus/list.js";
import { cacheRoot, repoRoot } from "./fixtures.js";
import { dstValues } from "../../src/resolve/hwcaps.js";

const BUILDER_VERSION = "1";
const SRC = path.join(repoRoot, "fixtures", "resolve");
/** The wrong-class candidate: a real i386 library from the cross corpus. */
export const I386_LIBRARY = path.join(crossPackageDir("libc6-i386"), "lib32", "libm.so.6");
export const LIB = dstValues().LIB;

type Step =
  | { out: string; src: string[]; so?: string; rpath?: string; runpath?: string; args?: string[] }
  | { link: string; to: string }
  | { copy: string; to: string }
  | { dir: string }
  | { text: string; to: string }
  | { head: string; bytes: number; to: string }
  | { audit2rpath: string };

const so = (out: string, src: string, extra: Partial<Extract<Step, { out: string }>> = {}): Step => ({
  out, src: [src], so: path.basename(out), ...extra,
});

function steps(hasI386: boolean): Step[] {
  return [
    so("b/libB.so", "b.c"), so("llp/libB.so", "b7.c"),
    so("a/libA.so", "a.c", { rpath: "$ORIGIN/nonexistent", args: ["-Lb", "-lB"] }),
    so("a2/libA.so", "a.c", { runpath: "$ORIGIN/nonexistent", args: ["-Lb", "-lB"] }),
    { out: "exe_rpath", src: ["main.c"], rpath: "$ORIGIN/a:$ORIGIN/b", args: ["-La", "-lA", "-Wl,-rpath-link,b"] },
    { out: "exe_runpath", src: ["main.c"], runpath: "$ORIGIN/a:$ORIGIN/b", args: ["-La", "-lA", "-Wl,-rpath-link,b"] },
    { out: "exe_rpath_librunpath", src: ["main.c"], rpath: "$ORIGIN/a2:$ORIGIN/b", args: ["-La2", "-lA", "-Wl,-rpath-link,b"] },
    { out: "exe_emptyrpath", src: ["main.c"], rpath: ":/nonexistent", args: ["-La", "-lA", "-Wl,-rpath-link,b"] },
    { out: "exe_b_rpath", src: ["bmain.c"], rpath: "$ORIGIN/b", args: ["-Lb", "-lB"] },
    { out: "exe_b_runpath", src: ["bmain.c"], runpath: "$ORIGIN/b", args: ["-Lb", "-lB"] },
    ...(hasI386 ? [{ copy: I386_LIBRARY, to: "badclass/libB.so" }] : []),
    { text: `/* GNU ld script */\nGROUP ( libB.so.1 AS_NEEDED ( libB.so.1 ) )\n${"0".repeat(64)}\n`, to: "notelf/libB.so" },
    { head: "b/libB.so", bytes: 13, to: "short/libB.so" },
    { dir: "isdir/libB.so" },
    so("d/libC.so", "c.c"), so("a3/libM.so", "m.c", { args: ["-Ld", "-lC"] }),
    so("a3/libA.so", "a3.c", { runpath: "$ORIGIN", args: ["-La3", "-lM"] }),
    { out: "exe_chain", src: ["main.c"], rpath: "$ORIGIN/a3:$ORIGIN/d", args: ["-La3", "-lA", "-Wl,-rpath-link,a3:d"] },
    { copy: "a3/libM.so", to: "a5/libM.so" },
    so("a5/libA.so", "a3.c", { runpath: "$ORIGIN", args: ["-Wl,--audit,$ORIGIN/../d", "-La5", "-lM"] }),
    { audit2rpath: "a5/libA.so" },
    { out: "exe_dl", src: ["cmain.c"], rpath: "$ORIGIN/d:$ORIGIN/bfs/d", args: ["-Ld", "-lC"] },
    { out: "exe_dl_runpath", src: ["cmain.c"], runpath: "$ORIGIN/d:$ORIGIN/bfs/d", args: ["-Ld", "-lC"] },
    { out: "exe_chain_both", src: ["main.c"], rpath: "$ORIGIN/a5", args: ["-La5", "-lA", "-Wl,-rpath-link,a5:d"] },
    so("inh/deps/libZ.so", "c.c"), so("inh/w/libW.so", "w.c", { args: ["-Linh/deps", "-lZ"] }),
    so("inh/y/libY.so", "y.c", { runpath: "$ORIGIN/../w", args: ["-Linh/w", "-lW", "-Wl,-rpath-link,inh/deps"] }),
    so("inh/x/libX.so", "x.c", { rpath: "$ORIGIN/../y:$ORIGIN/../deps", args: ["-Linh/y", "-lY", "-Wl,-rpath-link,inh/w:inh/deps"] }),
    { out: "exe_inh", src: ["main.c"], runpath: "$ORIGIN/inh/x", args: ["-Linh/x", "-lX", "-Wl,-rpath-link,inh/y:inh/w:inh/deps"] },
    so("bfs/d/libD.so", "d.c"),
    so("bfs/libs/libB2.so", "b2.c", { rpath: "$ORIGIN/../d", args: ["-Lbfs/d", "-lD"] }),
    so("bfs/libs/libC2.so", "c2.c", { args: ["-Lbfs/d", "-lD"] }),
    ...(["BC", "CB"] as const).map((o): Step => ({
      out: `bfs/exe_${o}`, src: ["bfsmain.c"], runpath: "$ORIGIN/libs",
      args: ["-Wl,--no-as-needed", "-Lbfs/libs", ...(o === "BC" ? ["-lB2", "-lC2"] : ["-lC2", "-lB2"]), "-Wl,-rpath-link,bfs/d"],
    })),
    so("a_ndl/libA.so", "a_nodeps.c", { args: ["-Wl,-z,nodefaultlib", "-Wl,--no-as-needed", "/usr/lib/x86_64-linux-gnu/libz.so.1"] }),
    { out: "exe_ndl", src: ["main.c"], runpath: "$ORIGIN/a_ndl", args: ["a_ndl/libA.so"] },
    { copy: "b/libB.so", to: "hw/libB.so" },
    { copy: "b/libB.so", to: "hw/glibc-hwcaps/x86-64-v2/libB.so" },
    { copy: "b/libB.so", to: "hw/glibc-hwcaps/x86-64-v3/libB.so" },
    { out: "exe_hw", src: ["main.c"], rpath: "$ORIGIN/a:$ORIGIN/hw", args: ["-La", "-lA", "-Wl,-rpath-link,b"] },
    so("a_org/libA.so", "a.c", { rpath: "$ORIGIN/deps", args: ["-Lb", "-lB"] }),
    { link: "linkdir/libA.so", to: "../a_org/libA.so" }, { copy: "b/libB.so", to: "linkdir/deps/libB.so" },
    { out: "exe_linkdir", src: ["main.c"], rpath: "$ORIGIN/linkdir", args: ["-La_org", "-lA", "-Wl,-rpath-link,b"] },
    { copy: "a_org/libA.so", to: "realdir/x/libA.so" }, { copy: "b/libB.so", to: "realdir/x/deps/libB.so" },
    { link: "viadir", to: "realdir/x" },
    { out: "exe_viadir", src: ["main.c"], rpath: "$ORIGIN/viadir", args: ["-La_org", "-lA", "-Wl,-rpath-link,b"] },
    { copy: "a/libA.so", to: `dst/${LIB}/libA.so` },
    { out: "exe_dst", src: ["main.c"], rpath: "$ORIGIN/dst/$PLATFORM:${ORIGIN}/dst/$LIB:$ORIGINX:$ORIGIN/b", args: ["-La", "-lA", "-Wl,-rpath-link,b"] },
    so("linkonly/libBrel.so", "b.c", { so: "b/libB.so" }),
    so("linkonly/libBorig.so", "b.c", { so: "$ORIGIN/../b/libB.so" }),
    so("linkonly/libBabs.so", "b.c", { so: "@W@/b/libB.so" }),
    so("a_rel/libA.so", "a.c", { args: ["linkonly/libBrel.so"] }),
    so("a_orig/libA.so", "a.c", { args: ["linkonly/libBorig.so"] }),
    { out: "exe_rel", src: ["main.c"], runpath: "$ORIGIN/a_rel", args: ["a_rel/libA.so", "-Wl,--allow-shlib-undefined"] },
    { out: "exe_orig", src: ["main.c"], runpath: "$ORIGIN/a_orig", args: ["a_orig/libA.so", "-Wl,--allow-shlib-undefined"] },
    { out: "exe_soname", src: ["main.c"], runpath: "@W@/a", args: ["-Wl,--no-as-needed", "linkonly/libBabs.so", "-La", "-lA", "-Wl,-rpath-link,b"] },
    so("v1/libx.so", "xyz_v1.c", { so: "libx.so", args: [`-Wl,--version-script,${path.join(SRC, "v1.map")}`] }),
    so("v2/libx.so", "xyz_v2.c", { so: "libx.so", args: [`-Wl,--version-script,${path.join(SRC, "v2.map")}`] }),
    { out: "exe_needs_v2", src: ["vmain.c"], rpath: "$ORIGIN/v1:$ORIGIN/v2", args: ["v2/libx.so"] },
    { out: "exe_v2_ok", src: ["vmain.c"], rpath: "$ORIGIN/v2", args: ["v2/libx.so"] },
  ];
}

function gccArgs(s: Extract<Step, { out: string }>, final: string): string[] {
  const sub = (x: string): string => x.split("@W@").join(final);
  const args = ["-o", s.out, ...s.src.map((f) => path.join(SRC, f))];
  if (s.so !== undefined) args.push("-shared", "-fPIC", `-Wl,-soname,${sub(s.so)}`);
  if (s.rpath !== undefined) args.push("-Wl,--disable-new-dtags", `-Wl,-rpath,${sub(s.rpath)}`);
  if (s.runpath !== undefined) args.push("-Wl,--enable-new-dtags", `-Wl,-rpath,${sub(s.runpath)}`);
  return [...args, ...(s.args ?? []).map(sub)];
}

/** Turns the DT_AUDIT entry of an ELF64 file into DT_RPATH (so it has both RPATH and RUNPATH). */
function auditToRpath(file: string): void {
  const b = fs.readFileSync(file);
  const phoff = Number(b.readBigUInt64LE(0x20));
  for (let i = 0; i < b.readUInt16LE(0x38); i++) {
    const ph = phoff + i * b.readUInt16LE(0x36);
    if (b.readUInt32LE(ph) !== 2) continue;
    for (let at = Number(b.readBigUInt64LE(ph + 8)); b.readBigInt64LE(at) !== 0n; at += 16) {
      if (b.readBigInt64LE(at) === 0x6ffffefcn) b.writeBigInt64LE(15n, at);
    }
  }
  fs.writeFileSync(file, b);
}

function run(step: Step, dir: string, final: string): void {
  const target = (p: string): string => {
    const t = path.join(dir, p);
    fs.mkdirSync(path.dirname(t), { recursive: true });
    return t;
  };
  if ("out" in step) {
    target(step.out);
    execFileSync("gcc", gccArgs(step, final), { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  } else if ("link" in step) fs.symlinkSync(step.to, target(step.link));
  else if ("copy" in step) fs.copyFileSync(path.isAbsolute(step.copy) ? step.copy : path.join(dir, step.copy), target(step.to));
  else if ("dir" in step) fs.mkdirSync(target(step.dir), { recursive: true });
  else if ("text" in step) fs.writeFileSync(target(step.to), step.text);
  else if ("head" in step) fs.writeFileSync(target(step.to), fs.readFileSync(path.join(dir, step.head)).subarray(0, step.bytes));
  else auditToRpath(path.join(dir, step.audit2rpath));
}

function hashOf(hasI386: boolean): string {
  const h = createHash("sha256").update(`builder ${BUILDER_VERSION} i386 ${hasI386} lib ${LIB}\n`);
  h.update(execFileSync("gcc", ["--version"]));
  h.update(JSON.stringify(steps(hasI386)));
  for (const f of fs.readdirSync(SRC).sort()) h.update(`--- ${f}\n`).update(fs.readFileSync(path.join(SRC, f)));
  return h.digest("hex").slice(0, 16);
}

/** Whether the wrong-class candidate (an i386 library from the cross corpus) is available. */
export function hasI386(): boolean {
  return crossPackageReady("libc6-i386") && fs.existsSync(I386_LIBRARY);
}

/** Builds the tree once per content hash; returns W (its absolute, canonical path). */
export function buildResolveFixtures(): string {
  const withI386 = hasI386();
  fs.mkdirSync(path.join(cacheRoot, "resolve-fixtures"), { recursive: true });
  const final = path.join(fs.realpathSync(path.join(cacheRoot, "resolve-fixtures")), hashOf(withI386));
  if (fs.existsSync(path.join(final, ".complete"))) return final;
  const tmp = fs.mkdtempSync(`${final}.tmp-`);
  try {
    for (const s of steps(withI386)) run(s, tmp, final);
    fs.writeFileSync(path.join(tmp, ".complete"), "");
    try {
      fs.renameSync(tmp, final);
    } catch (err) {
      if (!fs.existsSync(path.join(final, ".complete"))) throw err;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return final;
}
