/**
 * Edited copies of real libraries still load. Every shared library (ELF `DYN` with a dynamic
 * section and no `PT_INTERP`) of the `wheels` corpus group and a third of the `host` group's (by a
 * hash of the path, test/corpus/list.ts `inDefaultSample`; all of them with
 * `ELFPATCH_FULL_CORPUS=1`: on a slower VM the ~1,000 took 4 minutes) is copied into a temp tree
 * that keeps its file name and its place relative to the group root (so `$ORIGIN`-relative
 * dependencies of wheels resolve inside the tree), and gets the edits that fit in place:
 *   (b) `soname` := a tail of the current SONAME (the core reuses existing string bytes);
 *   (c) a strictly shorter run path with the other tag (RPATH <-> RUNPATH), where the file has one;
 *   (d) `addNeeded` of a tail of an existing NEEDED string, then `removeNeeded` of it: the file must
 *       come back byte for byte;
 *   (a) `noDefaultLib` (an existing DT_FLAGS_1, or a spare DT_NULL slot).
 * After each edit: same size; `readelf -W -d` differs only in the expected entries, and the rest of
 * `readelf -V --dyn-syms` not at all; `eu-elflint --gnu-ld` says nothing new; the same request again
 * answers changed=false. Edits run with `grow: false`; `ELF_NO_ROOM` is accepted only where the
 * edit cannot fit (no spare DT_NULL slot, and for (a) no DT_FLAGS_1 either).
 *
 * dlopen (test/support/dlopen-many.ts: RTLD_LAZY | RTLD_LOCAL, one forked child per file, `chdir`
 * to the file's directory, libpython and libperl preloaded so extension modules can bind) of each
 * copy after (b)+(c) must give the same outcome (OK, or the same dlerror text) as the unedited
 * copy at the same path. The one legitimate difference: (c) turns RPATH into RUNPATH, and RUNPATH
 * is not used for indirect dependencies; a mismatch that is exactly an indirect dependency found
 * in a run path directory must disappear when those directories are given in LD_LIBRARY_PATH. To compare one edited file against unedited surroundings, the
 * few libraries that another tree library can load (reachable by NEEDED name from a library with a
 * run path) are edited on a private copy and swapped into the tree one at a time; all others are
 * edited in the tree and checked in one batch.
 *
 * The run path of (c) stays equivalent so the outcome can be compared: each entry becomes the
 * shortest of itself and its path relative to the file's directory (glibc resolves relative
 * entries against the working directory, which the dlopen child sets to that directory), or, when
 * that is not shorter, a short symlink name placed next to the file before the baseline run.
 * (a) may legitimately change dlopen outcomes, so for a handful of host libraries `ld.so --list`
 * checks instead that the loader applies the flag: it now stops at the first direct dependency
 * (which it found in a default directory before), and finds them all again through LD_LIBRARY_PATH.
 */
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectFile, isFileError, patchFile } from "../../src/index.js";
import type { EditRequest, ElfInfo, RunpathTag } from "../../src/core/types.js";
import { HOST_LIB_DIR, inDefaultSample, listCorpus, pythonSitePackages } from "../corpus/list.js";
import { dlopenMany, dlopenPreloads, type DlopenOutcome } from "../support/dlopen-many.js";
import { LDSO, dynString, flags1, has, ldsoList, type DynEntry } from "../support/oracle.js";
import { isSelfRelocating } from "../support/self-relocating.js";

const TOOLS_READY = ["readelf", "eu-elflint", "gcc", LDSO].every(has);
/** Parallel tool runs (readelf, eu-elflint) while editing. */
const CONCURRENCY = Math.max(2, Math.min(6, os.availableParallelism() * 2));
/** Share of attempted edits (per kind) that must succeed rather than answer ELF_NO_ROOM. */
const MIN_SUCCESS = 0.9;
/** Host libraries checked with `ld.so --list` after (a). */
const LDSO_HANDFUL = 8;
/** Every edit here must fit in the file as it is. */
const IN_PLACE = { grow: false } as const;
/**
 * Core behaviour by design: the terminating DT_NULL of a rewritten `.dynamic` gets value 0, while
 * spare slots beyond it keep their bytes. Some files carry a leftover value in a spare slot (e.g.
 * the string offset of a RUNPATH that chrpath removed); when add-needed turns that slot into the
 * terminator, its value becomes 0, so add-needed + remove-needed differs from the original in
 * exactly those d_val bytes, which nothing reads. Such a difference is counted and printed.
 */
const TOLERATE_ZEROED_SPARE_VALUES = true;

type Kind = "a" | "b" | "c" | "d";

interface State {
  dyn: DynEntry[];
  /** Hash of everything else `readelf -W -d -V --dyn-syms` prints (symbols, version tables). */
  rest: string;
  size: number;
}

interface Lib {
  label: string;
  group: string;
  src: string;
  /** The copy at the dlopen location, in the tree. */
  tree: string;
  /** Where the edits are made: `tree`, or a private copy (same file name) for a potential dependency. */
  file: string;
  potentialDep: boolean;
  info: ElfInfo;
  /** eu-elflint complaints about the unedited copy. */
  lint: string[];
  /** The planned (c) edit; null when the file has no run path or none shorter is equivalent. */
  runPath: { value: string; tag: RunpathTag } | null;
  /** The readelf state after the last successful edit. */
  state: State | null;
  /** Edits that succeeded. */
  done: Set<Kind>;
  baseline?: DlopenOutcome;
}

interface Counts {
  ok: number;
  noRoom: number;
  notApplicable: number;
  failed: number;
}

const counts: Record<Kind, Counts> = {
  a: { ok: 0, noRoom: 0, notApplicable: 0, failed: 0 },
  b: { ok: 0, noRoom: 0, notApplicable: 0, failed: 0 },
  c: { ok: 0, noRoom: 0, notApplicable: 0, failed: 0 },
  d: { ok: 0, noRoom: 0, notApplicable: 0, failed: 0 },
};
const failures: string[] = [];
/** Files whose add+remove round trip differed only in zeroed spare DT_NULL values. */
const zeroedSpare: string[] = [];
let tmp = "";
let libs: Lib[] = [];
let preload: string[] = [];
const skipped: Record<string, number> = {};

// ---- small async tool runner ------------------------------------------------------------------

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<Ran> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: "utf8", maxBuffer: 512 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number" && err.code !== undefined) return reject(err);
      resolve({ status: err ? ((err.code as number | undefined) ?? null) : 0, stdout, stderr });
    });
  });
}

async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

const DYN_LINE = /^\s*0x[0-9a-f]+\s+\(([^)]+)\)\s+(.*?)\s*$/;

/** `readelf -W -d -V --dyn-syms`: the dynamic entries (up to DT_NULL) and a hash of all the rest. */
async function readState(file: string): Promise<State> {
  const r = await run("readelf", ["-W", "-d", "-V", "--dyn-syms", file]);
  if (r.status !== 0) throw new Error(`readelf failed on ${file}: ${r.stderr}`);
  const dyn: DynEntry[] = [];
  const rest = createHash("sha256");
  let inDyn = false;
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("Dynamic section at offset")) {
      inDyn = true; // the entry count in this line changes with (a) and (d)
      continue;
    }
    if (inDyn) {
      const m = DYN_LINE.exec(line);
      if (m) {
        dyn.push({ tag: m[1], value: m[2] });
        continue;
      }
      if (/^\s*Tag\s+Type/.test(line)) continue;
      if (line.trim() === "") {
        inDyn = false;
        continue;
      }
    }
    rest.update(line).update("\n");
  }
  return { dyn, rest: rest.digest("hex"), size: fs.statSync(file).size };
}

/** `eu-elflint --gnu-ld`: complaint lines, path removed, sorted (as oracle.ts `elflint`). */
async function lint(file: string): Promise<string[]> {
  const r = await run("eu-elflint", ["--gnu-ld", file]);
  if (r.status !== 0 && r.status !== 1) throw new Error(`eu-elflint failed (${r.status}) on ${file}: ${r.stderr}`);
  return (r.stdout + r.stderr)
    .split("\n")
    .map((l) => l.split(file).join("<file>").trim())
    .filter((l) => l !== "" && l !== "No errors")
    .sort();
}

/** Offsets at which two files of equal size differ (at most 4096 of them). */
function differingBytes(a: string, b: string): number[] {
  const out: number[] = [];
  const [fa, fb] = [fs.openSync(a, "r"), fs.openSync(b, "r")];
  try {
    const size = fs.fstatSync(fa).size;
    if (fs.fstatSync(fb).size !== size) return [-1];
    const [ba, bb] = [Buffer.alloc(1 << 20), Buffer.alloc(1 << 20)];
    for (let off = 0; off < size && out.length < 4096; off += ba.length) {
      const n = fs.readSync(fa, ba, 0, ba.length, off);
      fs.readSync(fb, bb, 0, n, off);
      if (ba.subarray(0, n).equals(bb.subarray(0, n))) continue;
      for (let i = 0; i < n && out.length < 4096; i++) if (ba[i] !== bb[i]) out.push(off + i);
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
  return out;
}

/** PT_DYNAMIC's file range of an ELF64 little-endian file (the host and wheel corpus), or null. */
function dynamicRange(file: string): { off: number; size: number } | null {
  const head = Buffer.alloc(64);
  const fd = fs.openSync(file, "r");
  try {
    fs.readSync(fd, head, 0, 64, 0);
    if (head[4] !== 2 || head[5] !== 1) return null;
    const phoff = Number(head.readBigUInt64LE(32));
    const [phentsize, phnum] = [head.readUInt16LE(54), head.readUInt16LE(56)];
    const ph = Buffer.alloc(phentsize * phnum);
    fs.readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) {
      if (ph.readUInt32LE(i * phentsize) === 2) {
        return { off: Number(ph.readBigUInt64LE(i * phentsize + 8)), size: Number(ph.readBigUInt64LE(i * phentsize + 32)) };
      }
    }
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Whether every differing byte is part of the d_val of a DT_NULL slot past the terminator in
 * `orig`, now 0 (see TOLERATE_ZEROED_SPARE_VALUES).
 */
function onlyZeroedSpareValues(orig: string, now: string, diff: number[]): boolean {
  const dyn = dynamicRange(orig);
  if (dyn === null || diff[0] < 0) return false;
  const bytes = Buffer.alloc(dyn.size);
  const fd = fs.openSync(orig, "r");
  fs.readSync(fd, bytes, 0, dyn.size, dyn.off);
  fs.closeSync(fd);
  let end = -1;
  for (let i = 0; (i + 1) * 16 <= dyn.size; i++) {
    if (bytes.readBigUInt64LE(i * 16) === 0n) {
      end = i;
      break;
    }
  }
  const cur = Buffer.alloc(1);
  const fn = fs.openSync(now, "r");
  try {
    return diff.every((o) => {
      const rel = o - dyn.off;
      if (rel < 0 || rel >= dyn.size || rel % 16 < 8) return false;
      const slot = Math.floor(rel / 16);
      fs.readSync(fn, cur, 0, 1, o);
      return end >= 0 && slot > end && bytes.readBigUInt64LE(slot * 16) === 0n && cur[0] === 0;
    });
  } finally {
    fs.closeSync(fn);
  }
}

// ---- expected readelf changes ------------------------------------------------------------------

function norm(e: DynEntry): DynEntry {
  return { tag: e.tag, value: e.tag === "FLAGS_1" ? flags1([e]).sort().join(" ") : e.value };
}

/** The first difference between two dynamic listings, or null. */
function dynDiff(got: DynEntry[], want: DynEntry[]): string | null {
  const g = got.map(norm);
  const w = want.map(norm);
  for (let i = 0; i < Math.max(g.length, w.length); i++) {
    const a = g[i] ? `${g[i].tag} ${g[i].value}` : "(end)";
    const b = w[i] ? `${w[i].tag} ${w[i].value}` : "(end)";
    if (a !== b) return `readelf -d entry ${i}: got "${a}", expected "${b}"`;
  }
  return null;
}

const setSoname = (v: string) => (d: DynEntry[]) => d.map((e) => (e.tag === "SONAME" ? dynString("SONAME", v) : e));

/** As the core's setString with conversion: one entry of `tag` (kept in place), the other tag gone. */
const setRunPath = (tag: RunpathTag, v: string) => (d: DynEntry[]) => {
  const want = tag === "rpath" ? "RPATH" : "RUNPATH";
  const other = tag === "rpath" ? "RUNPATH" : "RPATH";
  let keep = d.findIndex((e) => e.tag === want);
  if (keep < 0) keep = d.findIndex((e) => e.tag === other);
  return d.flatMap((e, i) => (i === keep ? [dynString(want, v)] : e.tag === want || e.tag === other ? [] : [e]));
};

const addNeededFirst = (name: string) => (d: DynEntry[]) => {
  const at = Math.max(0, d.findIndex((e) => e.tag === "NEEDED"));
  return [...d.slice(0, at), dynString("NEEDED", name), ...d.slice(at)];
};

const withoutNeeded = (name: string) => (d: DynEntry[]) =>
  d.filter((e) => !(e.tag === "NEEDED" && e.value.endsWith(`[${name}]`)));

/** readelf lists the terminating DT_NULL too: a new entry goes right before it. */
const addNoDefLib = (d: DynEntry[]) => {
  if (d.some((e) => e.tag === "FLAGS_1")) {
    return d.map((e) => (e.tag === "FLAGS_1" ? { tag: e.tag, value: `Flags: ${[...flags1([e]), "NODEFLIB"].join(" ")}` } : e));
  }
  const end = d.findIndex((e) => e.tag === "NULL");
  const at = end < 0 ? d.length : end;
  return [...d.slice(0, at), { tag: "FLAGS_1", value: "Flags: NODEFLIB" }, ...d.slice(at)];
};

// ---- one edit ----------------------------------------------------------------------------------

interface Step {
  kind: Kind;
  what: string;
  req: EditRequest;
  expect: (d: DynEntry[]) => DynEntry[];
  /** Whether ELF_NO_ROOM is a legitimate answer for this file. */
  noRoomOk: boolean;
  /** Checks the `after` info patchFile returned; a message when wrong. */
  check: (after: ElfInfo) => string | null;
}

function fail(lib: Lib, what: string, message: string): void {
  failures.push(`${lib.label} [${what}]: ${message}`);
}

/** Applies one edit to `lib.file` and checks it; returns the new state, "no-room", or null on failure. */
async function applyStep(lib: Lib, before: State, s: Step): Promise<State | "no-room" | null> {
  const st0 = fs.statSync(lib.file);
  const r = patchFile(lib.file, s.req, IN_PLACE);
  if (isFileError(r)) {
    if (r.error.code === "ELF_NO_ROOM" && s.noRoomOk) {
      const st1 = fs.statSync(lib.file);
      if (st1.ino !== st0.ino || st1.mtimeMs !== st0.mtimeMs) fail(lib, s.what, "ELF_NO_ROOM, but the file was rewritten");
      return "no-room";
    }
    fail(lib, s.what, `${r.error.code}: ${r.error.message}`);
    return null;
  }
  if (!r.changed || !r.after) {
    fail(lib, s.what, "patchFile reports no change");
    return null;
  }
  const after = await readState(lib.file);
  const problems: string[] = [];
  if (after.size !== lib.info.size) problems.push(`size ${lib.info.size} -> ${after.size}`);
  const diff = dynDiff(after.dyn, s.expect(before.dyn));
  if (diff) problems.push(diff);
  if (after.rest !== before.rest) problems.push("readelf -V/--dyn-syms output changed");
  const newLint = (await lint(lib.file)).filter((l) => !lib.lint.includes(l));
  if (newLint.length > 0) problems.push(`new eu-elflint complaints: ${newLint.slice(0, 3).join(" | ")}`);
  const bad = s.check(r.after);
  if (bad) problems.push(bad);
  const again = patchFile(lib.file, s.req, IN_PLACE);
  if (isFileError(again)) problems.push(`second application: ${again.error.code}`);
  else if (again.changed || again.edits !== 0) problems.push("second application changed the file again");
  if (problems.length > 0) {
    fail(lib, s.what, problems.join("; "));
    return null;
  }
  return after;
}

function count(kind: Kind, r: State | "no-room" | null): void {
  if (r === "no-room") counts[kind].noRoom++;
  else if (r === null) counts[kind].failed++;
  else counts[kind].ok++;
}

/** A non-empty tail of `s`: without a leading "lib", else without its first character. */
function tailOf(s: string): string | null {
  const t = s.startsWith("lib") && s.length > 3 ? s.slice(3) : s.slice(1);
  return t.length > 0 ? t : null;
}

async function editsBCD(lib: Lib): Promise<void> {
  let state = lib.state!;
  const info = lib.info;
  // (b) SONAME := a tail of itself.
  const soname = info.soname !== null ? tailOf(info.soname) : null;
  if (soname === null) counts.b.notApplicable++;
  else {
    const r = await applyStep(lib, state, {
      kind: "b", what: `soname ${soname}`, req: { soname }, expect: setSoname(soname), noRoomOk: false,
      check: (a) => (a.soname === soname ? null : `after.soname = ${a.soname}`),
    });
    count("b", r);
    if (r !== null && r !== "no-room") {
      [state, lib.state] = [r, r];
      lib.done.add("b");
    }
  }
  // (c) a shorter, equivalent run path with the other tag.
  const rp = lib.runPath;
  if (rp === null) counts.c.notApplicable++;
  else {
    const r = await applyStep(lib, state, {
      kind: "c", what: `${rp.tag} ${rp.value}`, req: { setRpath: rp.value, rpathTag: rp.tag },
      expect: setRunPath(rp.tag, rp.value), noRoomOk: false,
      check: (a) => {
        const got = rp.tag === "rpath" ? [a.rpath, a.runpath] : [a.runpath, a.rpath];
        return got[0] === rp.value && got[1] === null ? null : `after rpath/runpath = ${a.rpath}/${a.runpath}`;
      },
    });
    count("c", r);
    if (r !== null && r !== "no-room") {
      [state, lib.state] = [r, r];
      lib.done.add("c");
    }
  }
  // (d) add a tail of an existing NEEDED string, then remove it: byte-identical again.
  let extra: string | null = null;
  for (const n of info.needed) {
    const t = tailOf(n);
    if (t !== null && !info.needed.includes(t)) {
      extra = t;
      break;
    }
  }
  if (extra === null) {
    counts.d.notApplicable++;
    return;
  }
  const name = extra;
  const pre = `${lib.file}.before-d`;
  fs.copyFileSync(lib.file, pre);
  try {
    await addAndRemove(lib, state, name, pre);
  } finally {
    fs.rmSync(pre, { force: true });
  }
}

async function addAndRemove(lib: Lib, state: State, name: string, pre: string): Promise<void> {
  const info = lib.info;
  const added = await applyStep(lib, state, {
    kind: "d", what: `add-needed ${name}`, req: { addNeeded: [name] }, expect: addNeededFirst(name),
    noRoomOk: info.spareDynamicSlots === 0,
    check: (a) => (a.needed[0] === name && a.needed.length === info.needed.length + 1 ? null : `after.needed = ${a.needed.join(",")}`),
  });
  if (added === null || added === "no-room") {
    count("d", added);
    return;
  }
  const removed = await applyStep(lib, added, {
    kind: "d", what: `remove-needed ${name}`, req: { removeNeeded: [name] }, expect: withoutNeeded(name), noRoomOk: false,
    check: (a) => (a.needed.join(",") === info.needed.join(",") ? null : `after.needed = ${a.needed.join(",")}`),
  });
  if (removed !== null) {
    const diff = differingBytes(pre, lib.file);
    if (diff.length > 0 && !(TOLERATE_ZEROED_SPARE_VALUES && onlyZeroedSpareValues(pre, lib.file, diff))) {
      const shown = diff.slice(0, 8).map((o) => `0x${o.toString(16)}`).join(" ");
      fail(lib, `remove-needed ${name}`, `${diff.length} bytes differ from the copy before add-needed, at ${shown}`);
      count("d", null);
      return;
    }
    if (diff.length > 0) zeroedSpare.push(lib.label);
  }
  count("d", removed);
  if (removed !== null) lib.done.add("d");
}

async function editA(lib: Lib): Promise<void> {
  const hasFlags1 = lib.state!.dyn.some((e) => e.tag === "FLAGS_1");
  const r = await applyStep(lib, lib.state!, {
    kind: "a", what: "no-default-lib", req: { noDefaultLib: true }, expect: addNoDefLib,
    noRoomOk: !hasFlags1 && lib.info.spareDynamicSlots === 0,
    check: (a) => (a.flags1.includes("NODEFLIB") ? null : `after.flags1 = ${a.flags1.join(" ")}`),
  });
  count("a", r);
  if (r !== null && r !== "no-room") {
    lib.state = r;
    lib.done.add("a");
    const again = inspectFile(lib.file);
    if (isFileError(again)) fail(lib, "no-default-lib", `no longer parses: ${again.error.code}`);
  }
}

// ---- layout --------------------------------------------------------------------------------------

/** Libraries another tree library can load: reachable by NEEDED file name from one with a run path. */
function markPotentialDeps(all: Lib[]): void {
  const byName = new Map<string, Lib[]>();
  for (const l of all) {
    const key = `${l.group}/${path.basename(l.src)}`;
    byName.set(key, [...(byName.get(key) ?? []), l]);
  }
  const queue = all.filter((l) => l.info.rpath !== null || l.info.runpath !== null);
  const seen = new Set<Lib>();
  while (queue.length > 0) {
    const l = queue.pop()!;
    for (const n of l.info.needed) {
      for (const dep of byName.get(`${l.group}/${n}`) ?? []) {
        if (seen.has(dep)) continue;
        seen.add(dep);
        dep.potentialDep = true;
        queue.push(dep);
      }
    }
  }
}

/** The (c) plan: an equivalent, strictly shorter run path (see the header), or null. */
function planRunPath(lib: Lib, symlinks: Map<string, number>): Lib["runPath"] {
  const cur = lib.info.runpath ?? lib.info.rpath;
  if (cur === null) return null;
  const tag: RunpathTag = lib.info.runpath !== null ? "rpath" : "runpath";
  const dir = path.dirname(lib.tree);
  const entries = cur.split(":");
  const target = (e: string): string | null =>
    e === "" || /\$(?!ORIGIN\b|\{ORIGIN\})/.test(e) ? null : path.resolve(dir, e.replace(/\$\{ORIGIN\}|\$ORIGIN/g, dir));
  const relative = entries.map((e) => {
    const t = target(e);
    const rel = t === null ? e : path.relative(dir, t) || ".";
    return rel.length < e.length ? rel : e;
  });
  if (relative.join(":").length < cur.length) return { value: relative.join(":"), tag };
  // Symlinks next to the file, made now so that the unedited copy sees the same directory.
  const links: [string, string][] = [];
  const short = entries.map((e) => {
    const t = target(e);
    if (t === null) return e;
    const k = symlinks.get(dir) ?? 0;
    symlinks.set(dir, k + 1);
    links.push([path.join(dir, `R${k}`), t]);
    return `R${k}`;
  });
  if (short.join(":").length >= cur.length) return null;
  for (const [link, t] of links) fs.symlinkSync(t, link);
  return { value: short.join(":"), tag };
}

/** The directories of the original run path of `lib`, as absolute paths in the tree. */
function rpathDirs(lib: Lib): string[] {
  const cur = lib.info.runpath ?? lib.info.rpath ?? "";
  const dir = path.dirname(lib.tree);
  return cur
    .split(":")
    .filter((e) => e !== "" && !/\$(?!ORIGIN\b|\{ORIGIN\})/.test(e))
    .map((e) => path.resolve(dir, e.replace(/\$\{ORIGIN\}|\$ORIGIN/g, dir)));
}


const real = (l: Lib): boolean => l.info.type === "DYN" && l.info.hasDynamic && l.info.interpreter === null;

describe.skipIf(!TOOLS_READY)("edited copies of real libraries", () => {
  beforeAll(async () => {
    const t0 = Date.now();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-"));
    const roots: Record<string, string | null> = { host: HOST_LIB_DIR, wheels: pythonSitePackages() };
    const groups = listCorpus().filter((g) => g.name in roots);
    const symlinks = new Map<string, number>();
    for (const g of groups) {
      const root = roots[g.name]!;
      for (const src of g.files) {
        if (g.name === "host" && !inDefaultSample(path.relative(root, src))) {
          skipped["host library outside the default sample (ELFPATCH_FULL_CORPUS=1)"] = (skipped["host library outside the default sample (ELFPATCH_FULL_CORPUS=1)"] ?? 0) + 1;
          continue;
        }
        const info = inspectFile(src);
        if (isFileError(info)) {
          skipped[info.error.code] = (skipped[info.error.code] ?? 0) + 1;
          continue;
        }
        const lib: Lib = {
          label: `${g.name}:${path.relative(root, src)}`, group: g.name, src,
          tree: path.join(tmp, "tree", g.name, path.relative(root, src)), file: "",
          potentialDep: false, info, lint: [], runPath: null, state: null, done: new Set(),
        };
        if (isSelfRelocating(info)) {
          skipped["self-relocating (left alone: static-pie.test.ts)"] = (skipped["self-relocating (left alone: static-pie.test.ts)"] ?? 0) + 1;
          continue;
        }
        if (!real(lib)) {
          const why = info.type !== "DYN" ? `type ${info.type}` : !info.hasDynamic ? "no dynamic section" : "has PT_INTERP";
          skipped[why] = (skipped[why] ?? 0) + 1;
          continue;
        }
        fs.mkdirSync(path.dirname(lib.tree), { recursive: true });
        fs.copyFileSync(src, lib.tree, fs.constants.COPYFILE_FICLONE);
        lib.file = lib.tree;
        libs.push(lib);
      }
    }
    markPotentialDeps(libs);
    for (const [k, lib] of libs.entries()) {
      lib.runPath = planRunPath(lib, symlinks);
      if (lib.potentialDep) {
        lib.file = path.join(tmp, "work", String(k), path.basename(lib.src));
        fs.mkdirSync(path.dirname(lib.file), { recursive: true });
        fs.copyFileSync(lib.tree, lib.file, fs.constants.COPYFILE_FICLONE);
      }
    }
    preload = dlopenPreloads(libs.filter((l) => l.group === "host").map((l) => l.src));
    await pool(libs, CONCURRENCY, async (lib) => {
      [lib.state, lib.lint] = await Promise.all([readState(lib.file), lint(lib.file)]);
    });
    const base = await dlopenMany(libs.map((l) => l.tree), { chdir: true, preload });
    base.forEach((o, k) => (libs[k].baseline = o));
    const ok = base.filter((o) => o.ok).length;
    const plans = libs.filter((l) => l.runPath).map((l) => `${l.label}: ${l.info.runpath !== null ? "RUNPATH" : "RPATH"} ` +
      `${l.info.runpath ?? l.info.rpath} -> ${l.runPath!.tag.toUpperCase()} ${l.runPath!.value}`);
    console.log(
      `[real-libs] ${libs.length} libraries (${libs.filter((l) => l.potentialDep).length} potential dependencies), ` +
        `skipped ${JSON.stringify(skipped)}; baseline dlopen OK ${ok}/${libs.length}; preload ${preload.join(" ")}; ` +
        `setup ${Date.now() - t0} ms; (c) plans, e.g.:\n  ${[...new Set(plans.map((p) => p.replace(/^[^:]+:[^:]+: /, "")))].join("\n  ")}`,
    );
  });

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("finds the corpus", () => {
    expect(libs.length).toBeGreaterThan(250);
  });

  it("(b) soname tail, (c) shorter run path, (d) add+remove NEEDED: only the expected entries change", async () => {
    const t0 = Date.now();
    await pool(libs, CONCURRENCY, editsBCD);
    console.log(
      `[real-libs] edits b/c/d in ${Date.now() - t0} ms: ${JSON.stringify({ b: counts.b, c: counts.c, d: counts.d })}; ` +
        `add+remove differed only in zeroed spare DT_NULL values (tolerated: ${TOLERATE_ZEROED_SPARE_VALUES}) ` +
        `for ${zeroedSpare.length}: ${zeroedSpare.slice(0, 5).join(" ")}${zeroedSpare.length > 5 ? " ..." : ""}`,
    );
    expect(failures.slice(0, 30)).toEqual([]);
    for (const k of ["b", "c", "d"] as const) {
      const c = counts[k];
      expect(c.failed, `(${k}) failures`).toBe(0);
      expect(c.ok / Math.max(1, c.ok + c.noRoom), `(${k}) success share`).toBeGreaterThanOrEqual(MIN_SUCCESS);
    }
    expect(counts.b.ok).toBeGreaterThan(100);
    expect(counts.d.ok).toBeGreaterThan(100);
  });

  it("dlopen outcome of each edited copy equals that of the unedited copy", async () => {
    const t0 = Date.now();
    const changed = (l: Lib) => l.done.has("b") || l.done.has("c");
    const mismatches: string[] = [];
    const explained: string[] = [];
    const compare = async (l: Lib, got: DlopenOutcome): Promise<void> => {
      if (got.message === l.baseline!.message) return;
      const what = `${l.label} [${[...l.done].join("")}]: before "${l.baseline!.message}", after "${got.message}"`;
      // RPATH -> RUNPATH: RUNPATH is not used for indirect dependencies, RPATH is. A missing indirect
      // dependency that sits in a run path directory is that difference; with those directories in
      // LD_LIBRARY_PATH (searched for every object) the edited copy must load as before.
      const missing = /^(\S+): cannot open shared object file/.exec(got.message)?.[1];
      const dirs = rpathDirs(l);
      if (
        l.done.has("c") && l.runPath?.tag === "runpath" && missing && !l.info.needed.includes(missing) &&
        dirs.some((d) => fs.existsSync(path.join(d, missing)))
      ) {
        const env = { LD_LIBRARY_PATH: dirs.join(":") };
        const again = (await dlopenMany([l.tree], { chdir: true, preload, env }))[0];
        if (again.message === l.baseline!.message) {
          explained.push(`${what}; with LD_LIBRARY_PATH: "${again.message}"`);
          return;
        }
      }
      mismatches.push(what);
    };
    // Edited in the tree, around unedited potential dependencies: one batch.
    const inTree = libs.filter((l) => !l.potentialDep);
    const got = await dlopenMany(inTree.map((l) => l.tree), { chdir: true, preload });
    for (const [k, l] of inTree.entries()) await compare(l, got[k]);
    // Potential dependencies: swapped into the tree one at a time.
    const swapped = libs.filter((l) => l.potentialDep && changed(l));
    for (const l of swapped) {
      const stash = `${l.tree}.unedited`;
      fs.renameSync(l.tree, stash);
      fs.renameSync(l.file, l.tree);
      try {
        await compare(l, (await dlopenMany([l.tree], { chdir: true, preload }))[0]);
      } finally {
        fs.renameSync(l.tree, l.file);
        fs.renameSync(stash, l.tree);
      }
    }
    const edited = libs.filter(changed);
    console.log(
      `[real-libs] dlopen: ${inTree.length} in one batch + ${swapped.length} swapped in; ` +
        `${edited.length} edited by (b)/(c), ${edited.filter((l) => l.baseline!.ok).length} of them load OK; ` +
        `${mismatches.length} mismatches; ${explained.length} explained by RUNPATH not applying to indirect ` +
        `dependencies:${explained.map((e) => `\n  ${e}`).join("")}\n  (${Date.now() - t0} ms)`,
    );
    expect(mismatches).toEqual([]);
    // The comparison means something only if most edited copies actually load.
    expect(edited.filter((l) => l.baseline!.ok).length).toBeGreaterThan(edited.length / 2);
  });

  it("(a) noDefaultLib: in place, parses, elflint clean, idempotent; the loader applies it", async () => {
    const t0 = Date.now();
    const env = { LD_LIBRARY_PATH: "" };
    // A handful of host libraries without run path, edited in the tree: ld.so --list before and after.
    const handful = libs
      .filter((l) => l.group === "host" && !l.potentialDep && l.info.rpath === null && l.info.runpath === null)
      .filter((l) => l.info.needed.some((n) => !n.startsWith("ld-linux")))
      .slice(0, LDSO_HANDFUL * 2);
    const listed = new Map(handful.map((l) => [l, ldsoList(l.file, env)]));
    const nFailed = failures.length;
    await pool(libs, CONCURRENCY, editA);
    console.log(`[real-libs] edit a in ${Date.now() - t0} ms: ${JSON.stringify(counts.a)}`);
    expect(failures.slice(nFailed, nFailed + 30)).toEqual([]);
    expect(counts.a.failed).toBe(0);
    expect(counts.a.ok / Math.max(1, counts.a.ok + counts.a.noRoom)).toBeGreaterThanOrEqual(MIN_SUCCESS);

    let checked = 0;
    const shown: string[] = [];
    const problems: string[] = [];
    for (const [l, before] of listed) {
      if (checked >= LDSO_HANDFUL || !l.done.has("a")) continue;
      const direct = l.info.needed.filter((n) => !n.startsWith("ld-linux"));
      if (before.status !== 0 || !direct.every((n) => before.libs.get(n)?.startsWith("/"))) continue;
      checked++;
      shown.push(l.label);
      // ld.so --list stops at the first dependency it cannot find (exit 127, message on stderr).
      const after = ldsoList(l.file, env);
      const missing = /: ([^:\s]+): cannot open shared object file/.exec(after.stderr)?.[1];
      if (after.status === 0 || missing !== direct[0]) {
        problems.push(`${l.label}: status ${after.status}, missing ${missing} (expected ${direct[0]}): ${after.stderr.trim()}`);
      }
      for (const n of direct) {
        const got = after.libs.get(n);
        if (got !== undefined && got !== "not found") problems.push(`${l.label}: ${n} => ${got} despite NODEFLIB`);
      }
      // Control: LD_LIBRARY_PATH is not a default path, so with it every dependency is found again.
      const dirs = [...new Set(direct.map((n) => path.dirname(before.libs.get(n)!)))];
      const control = ldsoList(l.file, { LD_LIBRARY_PATH: dirs.join(":") });
      for (const n of direct) {
        if (control.libs.get(n) !== before.libs.get(n)) {
          problems.push(`${l.label}: with LD_LIBRARY_PATH ${n} => ${control.libs.get(n)}, was ${before.libs.get(n)}`);
        }
      }
    }
    console.log(`[real-libs] ld.so --list NODEFLIB check on ${checked} host libraries: ${shown.join(" ")}`);
    expect(problems).toEqual([]);
    expect(checked).toBeGreaterThanOrEqual(Math.min(5, handful.length));
  });
});
