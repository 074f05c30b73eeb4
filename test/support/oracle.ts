/**
 * Oracles: real tools (readelf, eu-elflint, the glibc loader, gcc) that judge the files elfpatch
 * writes. Each helper runs one tool synchronously and returns parsed, comparable output.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { expect } from "vitest";
import { cacheRoot } from "./fixtures.js";

export const LDSO = "/lib64/ld-linux-x86-64.so.2";

export interface DynEntry {
  tag: string;
  value: string;
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Whether `tool` is an executable file on PATH (or an existing absolute path). */
export function has(tool: string): boolean {
  const candidates = tool.includes("/")
    ? [tool]
    : (process.env.PATH ?? "").split(path.delimiter).filter(Boolean).map((d) => path.join(d, tool));
  return candidates.some((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return fs.statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): RunResult {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: env ? { ...process.env, ...env } : process.env });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `readelf` output; throws if readelf fails. */
export function readelf(args: string[], file: string): string {
  return execFileSync("readelf", [...args, file], { encoding: "utf8" });
}

/** The entries `readelf -W -d` prints (up to the first DT_NULL), as {tag, value}. */
export function readelfDynamic(file: string): DynEntry[] {
  const out: DynEntry[] = [];
  for (const line of readelf(["-W", "-d"], file).split("\n")) {
    const m = /^\s*0x[0-9a-f]+\s+\(([^)]+)\)\s+(.*?)\s*$/.exec(line);
    if (m) out.push({ tag: m[1], value: m[2] });
  }
  return out;
}

/** The bracketed strings of one tag (`NEEDED`, `RUNPATH`, `RPATH`, `SONAME`), in order. */
export function dynStrings(entries: DynEntry[], tag: string): string[] {
  return entries.filter((e) => e.tag === tag).map((e) => /\[(.*)\]$/.exec(e.value)?.[1] ?? e.value);
}

/** The readelf rendering of a string-valued dynamic entry. */
export function dynString(tag: "NEEDED" | "RUNPATH" | "RPATH" | "SONAME", value: string): DynEntry {
  const label = { NEEDED: "Shared library", RUNPATH: "Library runpath", RPATH: "Library rpath", SONAME: "Library soname" }[tag];
  return { tag, value: `${label}: [${value}]` };
}

/** Flag names of `DT_FLAGS_1` as readelf prints them (`[]` when the tag is absent). */
export function flags1(entries: DynEntry[]): string[] {
  const e = entries.find((x) => x.tag === "FLAGS_1");
  return e ? e.value.replace(/^Flags:\s*/, "").split(/\s+/).filter(Boolean) : [];
}

/** The `PT_INTERP` string from `readelf -l`, or null. */
export function readelfInterpreter(file: string): string | null {
  const m = /\[Requesting program interpreter: (.*)\]/.exec(readelf(["-W", "-l"], file));
  return m ? m[1] : null;
}

/** Strings of `.dynstr` as `readelf -p .dynstr` lists them (each string once, by start offset). */
export function dynstrStrings(file: string): string[] {
  const out: string[] = [];
  for (const line of readelf(["-p", ".dynstr"], file).split("\n")) {
    const m = /^\s*\[\s*[0-9a-f]+\]\s\s(.*)$/.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}

/** Dynamic symbol names (`readelf --dyn-syms -W`), version suffixes kept. */
export function dynSymbols(file: string): string[] {
  const out: string[] = [];
  for (const line of readelf(["--dyn-syms", "-W"], file).split("\n")) {
    const m = /^\s*\d+:\s+[0-9a-f]+\s+\d+\s+\w+\s+\w+\s+\w+\s+\S+\s+(\S+)/.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}

export interface LdsoList {
  status: number | null;
  /** Library name -> resolved absolute path (normalised), "not found", or the raw text when neither. */
  libs: Map<string, string>;
  stderr: string;
}

/** `ld.so --list file`: what the real loader resolves, without running the file. */
export function ldsoList(file: string, env?: NodeJS.ProcessEnv): LdsoList {
  const r = run(LDSO, ["--list", file], env);
  const libs = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    const arrow = /^\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?\s*$/.exec(line);
    if (arrow) {
      const target = arrow[2];
      libs.set(arrow[1], target.startsWith("/") ? path.normalize(target) : target);
      continue;
    }
    const bare = /^\s*(\S+) \(0x[0-9a-f]+\)\s*$/.exec(line);
    if (bare) libs.set(bare[1], bare[1]);
  }
  return { status: r.status, libs, stderr: r.stderr };
}

const DLOPEN_SOURCE = `#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
  if (argc != 2) return 2;
  void *h = dlopen(argv[1], RTLD_NOW);
  if (!h) { printf("%s\\n", dlerror()); return 1; }
  printf("ok\\n");
  return 0;
}
`;

const tools = new Map<string, string>();

/**
 * Compiles a small C helper once per source and compiler, cached in .cache/tools/; returns its
 * path. The build happens in a temp dir renamed into place, so concurrent builders race harmlessly.
 */
export function buildTool(name: string, source: string, flags: string[] = []): string {
  const hash = createHash("sha256").update(source).update(execFileSync("gcc", ["--version"])).digest("hex");
  const exe = path.join(cacheRoot, "tools", `${name}-${hash.slice(0, 16)}`);
  const known = tools.get(exe);
  if (known) return known;
  if (!fs.existsSync(exe)) {
    fs.mkdirSync(path.dirname(exe), { recursive: true });
    const tmp = fs.mkdtempSync(`${exe}.tmp-`);
    try {
      const src = path.join(tmp, `${name}.c`);
      fs.writeFileSync(src, source);
      execFileSync("gcc", ["-O1", ...flags, "-o", path.join(tmp, name), src, "-ldl"], { stdio: "pipe" });
      fs.renameSync(path.join(tmp, name), exe);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  tools.set(exe, exe);
  return exe;
}

/** The program that dlopens its argument with RTLD_NOW. */
function dlopenProgram(): string {
  return buildTool("dlopen-check", DLOPEN_SOURCE);
}

/** dlopen(file, RTLD_NOW) in a fresh process: ok, or the dlerror() text. */
export function dlopenCheck(file: string, env?: NodeJS.ProcessEnv): { ok: boolean; message: string } {
  const r = run(dlopenProgram(), [path.resolve(file)], env);
  const message = (r.stdout + r.stderr).trim();
  return { ok: r.status === 0 && message === "ok", message };
}

/** `eu-elflint --gnu-ld file`: its complaint lines, with the file path removed, sorted. */
export function elflint(file: string): string[] {
  const r = run("eu-elflint", ["--gnu-ld", file]);
  if (r.status !== 0 && r.status !== 1) throw new Error(`eu-elflint failed (${r.status}): ${r.stderr}`);
  return (r.stdout + r.stderr)
    .split("\n")
    .map((line) => line.split(file).join("<file>").trim())
    .filter((line) => line !== "" && line !== "No errors")
    .sort();
}

/** Runs `file` (no shell) and returns its status and output. */
export function runProgram(file: string, env?: NodeJS.ProcessEnv, args: string[] = []): RunResult {
  return run(path.resolve(file), args, env);
}

/** What the edit tests compare before and after a patch. */
export interface Snapshot {
  dyn: DynEntry[];
  size: number;
  /** eu-elflint complaints, or [] when eu-elflint is not installed. */
  lint: string[];
  syms: string[];
  /** `readelf -V` (symbol version tables), verbatim. */
  versions: string;
}

export function snapshot(file: string): Snapshot {
  return {
    dyn: readelfDynamic(file),
    size: fs.statSync(file).size,
    lint: has("eu-elflint") ? elflint(file) : [],
    syms: dynSymbols(file),
    versions: readelf(["-V"], file),
  };
}

// ---- comparing snapshots -----------------------------------------------------------------------

/** What an edit may change in `readelf -d` output; everything else must stay byte-for-byte equal. */
export interface ExpectedChange {
  /** before -> after for entries changed in place or removed (default: unchanged). */
  map?: (d: DynEntry[]) => DynEntry[];
  /** New entries, at any position. */
  added?: DynEntry[];
  /** A new string may have been appended to .dynstr (DT_STRSZ may grow). */
  strszMayGrow?: boolean;
  versionsMayChange?: boolean;
}

type Str = "RUNPATH" | "RPATH" | "SONAME";
/** `map` builders for ExpectedChange. */
export const dynEdit = {
  setStr: (tag: Str, v: string) => (d: DynEntry[]) => d.map((e) => (e.tag === tag ? dynString(tag, v) : e)),
  retag: (from: Str, to: Str, v: string) => (d: DynEntry[]) => d.map((e) => (e.tag === from ? dynString(to, v) : e)),
  dropTags: (...tags: string[]) => (d: DynEntry[]) => d.filter((e) => !tags.includes(e.tag)),
  dropNeeded: (name: string) => (d: DynEntry[]) => d.filter((e) => e.tag !== "NEEDED" || !e.value.endsWith(`[${name}]`)),
  swapNeeded: (from: string, to: string) => (d: DynEntry[]) =>
    d.map((e) => (e.tag === "NEEDED" && e.value.endsWith(`[${from}]`) ? dynString("NEEDED", to) : e)),
};

/** FLAGS_1 compared as a set of names; everything else verbatim. */
function norm(e: DynEntry): DynEntry {
  return { tag: e.tag, value: e.tag === "FLAGS_1" ? flags1([e]).sort().join(" ") : e.value };
}

/** Asserts that `after` differs from `before` by exactly `exp`, with no size change and no new lint. */
export function expectOnlyChange(before: Snapshot, after: Snapshot, exp: ExpectedChange): void {
  let rest = after.dyn.map(norm);
  for (const a of exp.added ?? []) {
    const i = rest.findIndex((e) => e.tag === norm(a).tag && e.value === norm(a).value);
    expect(i, `expected new entry ${a.tag} ${a.value}`).toBeGreaterThanOrEqual(0);
    rest.splice(i, 1);
  }
  let want = (exp.map ?? ((d) => d))(before.dyn).map(norm);
  if (exp.strszMayGrow) {
    const size = (d: DynEntry[]) => parseInt(d.find((e) => e.tag === "STRSZ")?.value ?? "0", 10);
    expect(size(rest)).toBeGreaterThanOrEqual(size(want));
    const blank = (d: DynEntry[]) => d.map((e) => (e.tag === "STRSZ" ? { tag: e.tag, value: "*" } : e));
    [rest, want] = [blank(rest), blank(want)];
  }
  expect(rest).toEqual(want);
  expect(after.size).toBe(before.size);
  expect(after.lint.filter((l) => !before.lint.includes(l)), "new eu-elflint complaints").toEqual([]);
  expect(after.syms).toEqual(before.syms);
  if (!exp.versionsMayChange) expect(after.versions).toBe(before.versions);
}
