/**
 * Builders for the randomized layout property test (test/integration/property-layouts.test.ts):
 * a deterministic PRNG, the toolchain probe (which `-fuse-ld=` linkers work, which flags each one
 * rejects), the one-time compile of fixtures/prop/*, and the per-case link of a program tree:
 *
 *   <case>/prog                     the C or C++ program (NEEDED libprop.so)
 *   <case>/deps/libprop.so          TLS, constructor, versioned symbol (PROP_1/PROP_2), NEEDED libpropdep.so
 *   <case>/deps/libpropdep.so       libprop's dependency
 *   <case>/deps/libextra.so         unused; for add-needed / remove-needed
 *   <case>/deps/<LONG_PROP>         copy of libprop.so under a longer name (replace-needed on prog)
 *   <case>/deps/<LONG_DEP>          copy of libpropdep.so under a longer name (replace-needed on libprop)
 *   <case>/<LONG_INTERP_DIR>/ld-linux-x86-64.so.2 -> /lib64/ld-linux-x86-64.so.2
 *   <case>/empty/                   an empty directory (add-rpath + shrink drops it)
 *   <case>/orig/                    untouched copies of the linked files (baselines)
 *
 * A case's link runs as one `sh` child process, so it makes progress while the test's main thread
 * is busy with synchronous oracles of the previous case.
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const propSourceDir = fileURLToPath(new URL("../../fixtures/prop/", import.meta.url));

export const LINKERS = ["bfd", "gold", "lld", "mold"] as const;
export type Linker = (typeof LINKERS)[number];

export const LONG_PROP = "libprop-renamed-to-a-considerably-longer-file-name.so.3";
export const LONG_DEP = "libpropdep-renamed-to-a-considerably-longer-file-name.so.7";
export const LONG_INTERP_DIR = "very/long/path/leading/to/an/equivalent/program/interpreter";
export const SYSTEM_INTERP = "/lib64/ld-linux-x86-64.so.2";

// ---- PRNG ----------------------------------------------------------------------------------------

/** splitmix64-style mixing of a 32-bit value (for deriving per-case seeds from a base seed). */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** mulberry32: small, fast, deterministic; every draw of a case comes from its seed alone. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
  weighted<T>(xs: readonly [T, number][]): T {
    let total = 0;
    for (const [, w] of xs) total += w;
    let r = this.next() * total;
    for (const [x, w] of xs) {
      if ((r -= w) < 0) return x;
    }
    return xs[xs.length - 1][0];
  }
}

// ---- link choices --------------------------------------------------------------------------------

export interface LinkChoice {
  linker: Linker;
  separateCode: "separate-code" | "noseparate-code" | null;
  relro: "relro" | "norelro" | null;
  now: boolean;
  /** Bytes; null: the linker's default. */
  maxPage: number | null;
  commonPage: number | null;
  hash: "gnu" | "sysv" | "both";
  newDtags: boolean;
  pie: boolean;
  lang: "c" | "c++";
  /** The program links with run path `$ORIGIN/deps`; else none. */
  progRunpath: boolean;
  /** libprop links with run path `$ORIGIN`; else none. */
  libRunpath: boolean;
  /** Relative relocations packed as `DT_RELR` (`-z pack-relative-relocs`; glibc >= 2.36). */
  relr: boolean;
}

const PAGES = [0x1000, 0x4000, 0x10000, 0x200000];

/**
 * A case's link choice. `extra` draws the dimensions added after the regression cases were
 * recorded (DT_RELR): without it they are off, so a regression seed keeps the layout it was
 * found with.
 */
export function drawLinkChoice(rng: Rng, extra?: Rng): LinkChoice {
  const linker = rng.pick(LINKERS);
  const separateCode = rng.pick(["separate-code", "noseparate-code", null] as const);
  const relro = rng.pick(["relro", "norelro", null] as const);
  const now = rng.bool();
  const maxPage = rng.weighted<number | null>([[null, 2], [0x1000, 2], [0x4000, 1], [0x10000, 2], [0x200000, 1]]);
  const commonPage = maxPage === null ? null : rng.pick([null, Math.min(0x1000, maxPage), maxPage]);
  const hash = rng.pick(["gnu", "sysv", "both"] as const);
  const newDtags = rng.bool();
  const pie = rng.bool(0.6);
  const lang = rng.pick(["c", "c++"] as const);
  const progRunpath = rng.bool(0.6);
  const libRunpath = rng.bool();
  // Not with gold (no such option) nor mold: mold 1.10 (Debian 12) packs them without the
  // GLIBC_ABI_DT_RELR version need, and glibc refuses to load the result.
  const relr = extra !== undefined && (linker === "bfd" || linker === "lld") ? extra.bool(0.5) : false;
  return { linker, separateCode, relro, now, maxPage, commonPage, hash, newDtags, pie, lang, progRunpath, libRunpath, relr };
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const pageName = (n: number): string => (n >= 0x100000 ? `${n / 0x100000}M` : `${n / 0x400}K`);

/** The linker flags (`-Wl,...` spelled as `key`s) of a choice, each probed separately. */
export function linkerFlagKeys(c: LinkChoice): string[] {
  const keys: string[] = [];
  if (c.separateCode) keys.push(`-z ${c.separateCode}`);
  if (c.relro) keys.push(`-z ${c.relro}`);
  if (c.now) keys.push("-z now");
  if (c.maxPage !== null) keys.push(`-z max-page-size=${hex(c.maxPage)}`);
  if (c.commonPage !== null) keys.push(`-z common-page-size=${hex(c.commonPage)}`);
  keys.push(`--hash-style=${c.hash}`);
  keys.push(c.newDtags ? "--enable-new-dtags" : "--disable-new-dtags");
  if (c.relr) keys.push("-z pack-relative-relocs");
  return keys;
}

/** Every flag key any choice can produce (the probe tries each one per linker). */
export function allFlagKeys(): string[] {
  const keys = ["-z separate-code", "-z noseparate-code", "-z relro", "-z norelro", "-z now"];
  for (const p of PAGES) keys.push(`-z max-page-size=${hex(p)}`, `-z common-page-size=${hex(p)}`);
  keys.push("--hash-style=gnu", "--hash-style=sysv", "--hash-style=both", "--enable-new-dtags", "--disable-new-dtags");
  keys.push("-z pack-relative-relocs");
  return keys;
}

const wl = (key: string): string => `-Wl,${key.split(" ").join(",")}`;

/** A short, greppable description of a choice (page sizes in K/M). */
export function describeChoice(c: LinkChoice, omitted: string[] = []): string {
  const parts = [
    c.linker,
    c.lang,
    c.pie ? "pie" : "no-pie",
    c.separateCode ?? "sepcode-default",
    c.relro ?? "relro-default",
    c.now ? "now" : "lazy",
    `max-page=${c.maxPage === null ? "default" : pageName(c.maxPage)}`,
    `common-page=${c.commonPage === null ? "default" : pageName(c.commonPage)}`,
    `hash=${c.hash}`,
    c.newDtags ? "new-dtags" : "old-dtags",
    `prog-rpath=${c.progRunpath ? "$ORIGIN/deps" : "none"}`,
    `libprop-rpath=${c.libRunpath ? "$ORIGIN" : "none"}`,
  ];
  if (c.relr) parts.push("relr");
  if (omitted.length) parts.push(`omitted(rejected by ${c.linker}): ${omitted.join(", ")}`);
  return parts.join(" ");
}

// ---- running commands ----------------------------------------------------------------------------

interface Ran {
  ok: boolean;
  stdout: string;
  stderr: string;
}

function runAsync(cmd: string, args: string[], cwd?: string): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, encoding: "utf8", maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ ok: !err, stdout, stderr: stderr || (err ? String(err.message) : "") });
    });
  });
}

/** Runs `jobs` with at most `limit` in flight. */
export async function pool<T>(jobs: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  return out;
}

/** Shell single-quoting (the case scripts pass `$ORIGIN` literally). */
const sq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

// ---- toolchain probe -----------------------------------------------------------------------------

export interface Toolchain {
  /** Linkers whose trivial link worked, with their `--version` first line. */
  linkers: Map<Linker, string>;
  /** Linkers that failed the trivial link, with the error. */
  missing: Map<Linker, string>;
  /** Per linker: flag keys it rejects (with the first error line). */
  rejected: Map<Linker, Map<string, string>>;
  gxx: boolean;
}

/** Which `-fuse-ld=` linkers work here and which of our flags each one rejects. */
export async function probeToolchain(work: string): Promise<Toolchain> {
  fs.mkdirSync(work, { recursive: true });
  const c = path.join(work, "probe.c");
  fs.writeFileSync(c, "int probe_value(void) { return 1; }\nint main(void) { return probe_value() - 1; }\n");
  const obj = path.join(work, "probe.o");
  execFileSync("gcc", ["-c", "-fPIC", "-o", obj, c]);
  const cxx = path.join(work, "probe.cpp");
  fs.writeFileSync(cxx, "#include <stdexcept>\nint main() { try { throw std::runtime_error(\"x\"); } catch (...) { return 0; } }\n");
  const gxx = (await runAsync("g++", ["-o", path.join(work, "probe-cxx"), cxx])).ok;

  const linkers = new Map<Linker, string>();
  const missing = new Map<Linker, string>();
  await pool(
    LINKERS.map((l) => async () => {
      const out = path.join(work, `probe-${l}`);
      const r = await runAsync("gcc", [`-fuse-ld=${l}`, "-o", out, obj]);
      const run = r.ok ? await runAsync(out, []) : r;
      if (!run.ok) {
        missing.set(l, (r.stderr || run.stderr).split("\n")[0]);
        return;
      }
      const v = await runAsync("gcc", [`-fuse-ld=${l}`, "-Wl,--version", "-o", out, obj]);
      linkers.set(l, v.stdout.split("\n")[0].trim());
    }),
    2,
  );

  const rejected = new Map<Linker, Map<string, string>>();
  const jobs: (() => Promise<void>)[] = [];
  for (const l of LINKERS) {
    if (!linkers.has(l)) continue;
    rejected.set(l, new Map());
    allFlagKeys().forEach((key, i) => {
      jobs.push(async () => {
        const r = await runAsync("gcc", [`-fuse-ld=${l}`, "-shared", wl(key), "-o", path.join(work, `flag-${l}-${i}.so`), obj]);
        const firstError = r.stderr.split("\n").find((s) => /error|unknown|unrecognized|invalid/i.test(s));
        if (!r.ok) rejected.get(l)!.set(key, (firstError ?? r.stderr.split("\n")[0]).trim());
      });
    });
  }
  await pool(jobs, 2);
  return { linkers, missing, rejected, gxx };
}

// ---- objects -------------------------------------------------------------------------------------

/** Compiles fixtures/prop/* once (with -g, so strip --strip-debug has work to do). */
export async function compilePropObjects(dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const src = (f: string): string => path.join(propSourceDir, f);
  const inc = `-I${propSourceDir}`;
  const jobs: [string, string[]][] = [
    ["gcc", ["-c", "-g", "-O1", "-fPIC", inc, src("prop.c"), "-o", "prop.o"]],
    ["g++", ["-c", "-g", "-O1", "-fPIC", inc, src("propxx.cpp"), "-o", "propxx.o"]],
    ["gcc", ["-c", "-g", "-O1", "-fPIC", src("propdep.c"), "-o", "propdep.o"]],
    ["gcc", ["-c", "-g", "-O1", "-fPIC", src("extra.c"), "-o", "extra.o"]],
    ["gcc", ["-c", "-g", "-O1", "-fPIE", inc, src("main.c"), "-o", "main-c-pie.o"]],
    ["gcc", ["-c", "-g", "-O1", "-fno-pie", inc, src("main.c"), "-o", "main-c-nopie.o"]],
    ["g++", ["-c", "-g", "-O1", "-fPIE", inc, src("main.cpp"), "-o", "main-c++-pie.o"]],
    ["g++", ["-c", "-g", "-O1", "-fno-pie", inc, src("main.cpp"), "-o", "main-c++-nopie.o"]],
  ];
  const results = await pool(
    jobs.map(([cc, args]) => () => runAsync(cc, args, dir)),
    2,
  );
  results.forEach((r, i) => {
    if (!r.ok) throw new Error(`compiling ${jobs[i][1].join(" ")} failed:\n${r.stderr}`);
  });
}

// ---- one case ------------------------------------------------------------------------------------

export interface LinkOutcome {
  ok: boolean;
  /** Flag keys left out because the probe showed the linker rejects them. */
  omitted: string[];
  /** On failure: the step and the linker's complaint. */
  error?: string;
  ms: number;
}

/** Links one case tree into `dir` (created) from the objects in `objDir`. */
export async function linkCase(objDir: string, dir: string, c: LinkChoice, tc: Toolchain): Promise<LinkOutcome> {
  const t0 = Date.now();
  const rejected = tc.rejected.get(c.linker) ?? new Map<string, string>();
  const keys = linkerFlagKeys(c);
  const omitted = keys.filter((k) => rejected.has(k));
  const ldFlags = [`-fuse-ld=${c.linker}`, ...keys.filter((k) => !rejected.has(k)).map(wl)];
  const o = (f: string): string => path.join(objDir, f);
  const cxx = c.lang === "c++";
  const cc = cxx ? "g++" : "gcc";
  const lines: string[] = [
    "set -e",
    `cd ${sq(dir)}`,
    `mkdir -p deps empty orig ${sq(LONG_INTERP_DIR)}`,
    "echo '@@ libpropdep.so' >&2",
    ["gcc", ...ldFlags, "-shared", "-o", "deps/libpropdep.so", o("propdep.o"), "-Wl,-soname,libpropdep.so"].map(sq).join(" "),
    "echo '@@ libextra.so' >&2",
    ["gcc", ...ldFlags, "-shared", "-o", "deps/libextra.so", o("extra.o"), "-Wl,-soname,libextra.so"].map(sq).join(" "),
    "echo '@@ libprop.so' >&2",
    [
      cc, ...ldFlags, "-shared", "-o", "deps/libprop.so", o("prop.o"), ...(cxx ? [o("propxx.o")] : []),
      "-Wl,-soname,libprop.so", `-Wl,--version-script,${path.join(propSourceDir, "prop.map")}`,
      "-Ldeps", "-lpropdep", ...(c.libRunpath ? ["-Wl,-rpath,$ORIGIN"] : []),
    ].map(sq).join(" "),
    "echo '@@ prog' >&2",
    [
      cc, ...ldFlags, c.pie ? "-pie" : "-no-pie", "-o", "prog", o(`main-${c.lang}-${c.pie ? "pie" : "nopie"}.o`),
      "-Ldeps", "-lprop", "-Wl,-rpath-link,deps", ...(c.progRunpath ? ["-Wl,-rpath,$ORIGIN/deps"] : []),
    ].map(sq).join(" "),
    "echo '@@ copies' >&2",
    `cp deps/libprop.so deps/${sq(LONG_PROP)}`,
    `cp deps/libpropdep.so deps/${sq(LONG_DEP)}`,
    `ln -s ${sq(SYSTEM_INTERP)} ${sq(`${LONG_INTERP_DIR}/ld-linux-x86-64.so.2`)}`,
    "mkdir -p orig/deps && cp prog orig/ && cp deps/*.so* orig/deps/",
  ];
  fs.mkdirSync(dir, { recursive: true });
  const script = path.join(dir, "link.sh");
  fs.writeFileSync(script, lines.join("\n") + "\n");
  const r = await runAsync("sh", [script]);
  if (r.ok) return { ok: true, omitted, ms: Date.now() - t0 };
  const steps = r.stderr.split("@@ ");
  const last = steps[steps.length - 1].trim();
  return { ok: false, omitted, error: last.split("\n").slice(0, 6).join(" | "), ms: Date.now() - t0 };
}
