/**
 * CPU-dependent inputs of the loader:
 * - `activeHwcapsDirs`: the `glibc-hwcaps` subdirectories ld.so searches (loader.md §6). For the
 *   machine this process runs on, the answer of the glibc loader that loaded it: its `--help`
 *   lists the subdirectories it supports ("(supported, searched)", glibc >= 2.33; one run per
 *   process, and only once a search meets a directory that holds a hwcaps subdirectory, which most
 *   trees never do: profile.ts, search-path.ts; under this process's environment, so that a `GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2`
 *   mask counts as it does for the programs started beside it). glibc decides from CPUID, which the
 *   kernel's `/proc/cpuinfo` need not show as user space sees it (seen: a VM whose kernel lists no
 *   `abm` while CPUID reports LZCNT and ld.so searches `x86-64-v3` and `v4`). Without such a loader
 *   (glibc < 2.33, not glibc, another machine's loader) the x86-64 answer comes from the
 *   `/proc/cpuinfo` flags and the psABI ISA levels (as glibc's `get-isa-level.h`):
 *     baseline: cmov cx8 fpu fxsr mmx sse sse2
 *     v2: + cx16 lahf_lm popcnt pni(SSE3) sse4_1 sse4_2 ssse3
 *     v3: + avx avx2 bmi1 bmi2 f16c fma abm(LZCNT) movbe xsave(OSXSAVE)
 *     v4: + avx512f avx512bw avx512cd avx512dq avx512vl
 *   Levels are cumulative. Other machines give [] without their loader's answer: ppc64le (`power10`,
 *   `power9`) and s390x (`z17` ... `z13`) are decided from AT_HWCAP2/facility bits that
 *   /proc/cpuinfo does not show plainly.
 * - `dstValues`: `$LIB` and `$PLATFORM` (§5). `$LIB` is a constant of the glibc build: Debian's
 *   multiarch `lib/<triplet>` (measured: `lib/x86_64-linux-gnu`), upstream `lib64` on 64-bit,
 *   otherwise `lib`; it is derived from where `libc.so.6` is installed. `$PLATFORM` is the kernel's
 *   AT_PLATFORM (`uname -m` here), which glibc on Intel x86-64 replaces with `xeon_phi` or `haswell`
 *   (`sysdeps/x86/cpu-features.c`).
 * - `cacheIsaLevelOk`: the ISA-level test ld.so applies to glibc-hwcaps cache entries.
 * - `legacyHwcapComponents`: what the legacy hwcaps subdirectories of glibc < 2.37 are made of.
 * - `legacyCacheHwcaps`: the hwcap bits glibc 2.36-2.39 matched legacy cache entries against.
 * Every result can be overridden by the caller (a target profile) or computed from another
 * machine's /proc/cpuinfo text (and, optionally, its loader's `--help` text).
 */
import { existsSync, readFileSync } from "node:fs";
import { basename } from "node:path";
import { machine as hostMachine } from "node:os";
import type { LegacyHwcapRule } from "./ld-so-cache.js";

export interface CpuOptions {
  /**
   * /proc/cpuinfo text to use instead of the running machine's. Given alone, the running loader is
   * not asked either (the answer is the text's).
   */
  cpuinfo?: string;
  /** `ld.so --help` text to use instead of the running loader's; null: no loader answers. */
  loaderHelp?: string | null;
}

const BASELINE = ["cmov", "cx8", "fpu", "fxsr", "mmx", "sse", "sse2"];
const LEVELS: [string, string[]][] = [
  ["x86-64-v2", ["cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"]],
  ["x86-64-v3", ["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"]],
  ["x86-64-v4", ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]],
];

const MACHINES: Record<string, string> = {
  "62": "x86_64", x64: "x86_64", amd64: "x86_64", "3": "i386", i686: "i386", ia32: "i386",
  "183": "aarch64", arm64: "aarch64", "40": "arm", "21": "ppc64", "22": "s390", "243": "riscv64",
};

/** Canonical machine name for an ELF `e_machine` number or a uname/Node architecture string. */
function canonMachine(m: number | string): string {
  const s = String(m);
  return MACHINES[s] ?? s;
}

function readCpuinfo(opts: CpuOptions): string {
  if (opts.cpuinfo !== undefined) return opts.cpuinfo;
  try {
    return readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return "";
  }
}

/** What a glibc loader's `--help` says of the CPU it runs on. */
export interface LoaderCpuView {
  /** Its "(supported, searched)" glibc-hwcaps subdirectories, most preferred first. */
  hwcaps: string[];
  /** Its AT_PLATFORM line (glibc 2.33-2.36 print legacy subdirectories), or null. */
  platform: string | null;
  /** The legacy hwcap names it supports (`avx512_1`, `x86_64`, `tls`...), or null when not printed. */
  legacy: string[] | null;
}

/** Parses `ld.so --help`; null when it has no glibc-hwcaps section (glibc < 2.33, or not a glibc loader). */
export function parseLoaderHelp(help: string): LoaderCpuView | null {
  const lines = help.split("\n");
  const section = (title: RegExp): string[] | null => {
    const at = lines.findIndex((l) => title.test(l));
    if (at < 0) return null;
    const out: string[] = [];
    for (let i = at + 1; i < lines.length && lines[i]!.trim() !== ""; i++) out.push(lines[i]!.trim());
    return out;
  };
  const supported = (l: string): boolean => /\((?:AT_PLATFORM; )?supported, searched\)$/.test(l);
  const hw = section(/^Subdirectories of glibc-hwcaps directories/);
  const none = lines.some((l) => l.startsWith("No subdirectories of glibc-hwcaps directories are searched"));
  if (hw === null && !none) return null;
  const legacy = section(/^Legacy HWCAP subdirectories/);
  const platform = legacy?.find((l) => l.includes("(AT_PLATFORM"))?.split(" ")[0] ?? null;
  return {
    hwcaps: (hw ?? []).filter(supported).map((l) => l.split(" ")[0]!),
    platform,
    legacy: legacy === null ? null : legacy.filter(supported).map((l) => l.split(" ")[0]!),
  };
}

/** The file name of a glibc loader: `ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld64.so.2`, `ld-2.31.so`... */
const LOADER_NAME = /^(?:ld-linux[\w.-]*\.so\.\d+|ld64\.so\.\d+|ld\.so\.\d+|ld-2\.\d+\.so)$/;

let hostView: LoaderCpuView | null | undefined;

/**
 * The running loader's `--help` answer (see the module comment), computed once per process: the
 * loader is the file of that name mapped into this process (`/proc/self/maps`: a nixpkgs Node's is
 * its store glibc's, not `/lib64`'s). Null without one, or when it does not run.
 */
function hostLoaderView(): LoaderCpuView | null {
  if (hostView !== undefined) return hostView;
  hostView = null;
  const loader = runningLoader();
  if (loader !== null) {
    const { spawnSync } = require("node:child_process") as typeof import("node:child_process"); // (loaded at first use)
    const r = spawnSync(loader, ["--help"], { encoding: "utf8", timeout: 10_000 });
    if (r.status === 0) hostView = parseLoaderHelp(r.stdout);
  }
  return hostView;
}

/** The glibc loader mapped into this process, or null (no /proc, musl, a static build). */
function runningLoader(): string | null {
  try {
    const maps = readFileSync("/proc/self/maps", "utf8");
    return maps.split("\n").map((l) => /\s(\/\S+)$/.exec(l)?.[1]).find((p) => p !== undefined && LOADER_NAME.test(basename(p))) ?? null;
  } catch {
    return null;
  }
}

/** The loader answer for `machine`: the given text, else the running loader's for this machine only. */
function loaderView(machine: number | string, opts: CpuOptions): LoaderCpuView | null {
  if (opts.loaderHelp !== undefined) return opts.loaderHelp === null ? null : parseLoaderHelp(opts.loaderHelp);
  if (opts.cpuinfo !== undefined) return null;
  return canonMachine(machine) === canonMachine(hostMachine()) ? hostLoaderView() : null;
}

/** The CPU feature flags every processor in the cpuinfo text has (x86 `flags` lines). */
export function cpuFlags(opts: CpuOptions = {}): Set<string> {
  const lines = readCpuinfo(opts).split("\n").map((l) => /^flags\s*:(.*)$/.exec(l)?.[1]);
  const sets = lines.filter((l): l is string => l !== undefined).map((l) => new Set(l.trim().split(/\s+/)));
  if (sets.length === 0) return new Set();
  return new Set([...sets[0]!].filter((f) => sets.every((s) => s.has(f))));
}

/** Flags whose features are usable: AVX-family features need the OS to enable XSAVE (OSXSAVE). */
function usableFlags(opts: CpuOptions): Set<string> {
  const f = cpuFlags(opts);
  if (!f.has("xsave")) for (const x of f) if (x.startsWith("avx") || x === "fma" || x === "f16c") f.delete(x);
  return f;
}

function cpuVendor(opts: CpuOptions): string | null {
  return /^vendor_id\s*:\s*(\S+)/m.exec(readCpuinfo(opts))?.[1] ?? null;
}

/** x86-64 psABI level the flags reach: 0 none, 1 baseline, 2-4 for x86-64-v2..v4. */
export function x86IsaLevel(flags: ReadonlySet<string>): number {
  if (!BASELINE.every((f) => flags.has(f))) return 0;
  let level = 1;
  for (const [, need] of LEVELS) {
    if (!need.every((f) => flags.has(f))) break;
    level++;
  }
  return level;
}

/**
 * The `glibc-hwcaps` subdirectories ld.so searches on this CPU for `machine` (`e_machine` or a
 * name such as "x86_64"), most preferred first, e.g. ["x86-64-v4", "x86-64-v3", "x86-64-v2"].
 */
export function activeHwcapsDirs(machine: number | string = hostMachine(), opts: CpuOptions = {}): string[] {
  const view = loaderView(machine, opts);
  if (view !== null) return view.hwcaps;
  if (canonMachine(machine) !== "x86_64") return [];
  const level = x86IsaLevel(cpuFlags(opts));
  return LEVELS.slice(0, Math.max(0, level - 1))
    .map(([name]) => name)
    .reverse();
}

/**
 * This CPU's x86-64 psABI level: from the loader's supported `x86-64-vN` subdirectories when it
 * answers (the baseline taken for granted), else from the flags.
 */
function isaLevel(machine: number | string, opts: CpuOptions): number {
  const view = loaderView(machine, opts);
  if (view === null) return x86IsaLevel(cpuFlags(opts));
  const levels = view.hwcaps.map((d) => /^x86-64-v(\d+)$/.exec(d)?.[1]).filter((n) => n !== undefined).map(Number);
  return Math.max(1, ...levels);
}

/**
 * The `isaLevelOk` test of `lookupCache` (`dl_cache_hwcap_isa_level_compatible`): on x86-64 a
 * glibc-hwcaps cache entry with ISA level L needs psABI level L + 1 (0 = baseline, 1 = v2, ...).
 */
export function cacheIsaLevelOk(machine: number | string = hostMachine(), opts: CpuOptions = {}): (level: number) => boolean {
  if (canonMachine(machine) !== "x86_64") return () => true;
  const have = isaLevel(machine, opts);
  return (level) => level + 1 <= have;
}

/** glibc's replacement of AT_PLATFORM on Intel x86-64 CPUs, or null when it keeps AT_PLATFORM. */
function intelPlatform(opts: CpuOptions): "xeon_phi" | "haswell" | null {
  if (cpuVendor(opts) !== "GenuineIntel") return null;
  const f = usableFlags(opts);
  if (f.has("avx512cd") && f.has("avx512er") && f.has("avx512pf")) return "xeon_phi";
  const haswell = ["avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "popcnt"];
  return haswell.every((x) => f.has(x)) ? "haswell" : null;
}

export interface DstValues {
  LIB: string;
  PLATFORM: string;
}

export interface DstOptions extends CpuOptions {
  /** The loader's machine (`e_machine` or a uname name); default: this machine. */
  machine?: number | string;
  /** Fixed values (a target profile); each one given is returned as is. */
  LIB?: string;
  PLATFORM?: string;
  /** File-existence test used to find the libc directory (for tests); default `fs.existsSync`. */
  exists?: (path: string) => boolean;
}

const TRIPLETS: Record<string, string> = {
  x86_64: "x86_64-linux-gnu", i386: "i386-linux-gnu", aarch64: "aarch64-linux-gnu",
  arm: "arm-linux-gnueabihf", ppc64le: "powerpc64le-linux-gnu", s390x: "s390x-linux-gnu",
  riscv64: "riscv64-linux-gnu", loongarch64: "loongarch64-linux-gnu",
};
const BITS64 = new Set(["x86_64", "aarch64", "ppc64", "ppc64le", "s390x", "riscv64", "loongarch64", "mips64"]);

/** `$LIB` and `$PLATFORM` as the system's ld.so expands them (overridable, see `DstOptions`). */
export function dstValues(opts: DstOptions = {}): DstValues {
  const host = hostMachine();
  const m = canonMachine(opts.machine ?? host);
  const exists = opts.exists ?? existsSync;
  let lib = opts.LIB;
  if (lib === undefined) {
    const triplet = TRIPLETS[m];
    if (triplet && exists(`/lib/${triplet}/libc.so.6`)) lib = `lib/${triplet}`;
    else if (BITS64.has(m) && (exists("/lib64/libc.so.6") || exists("/usr/lib64/libc.so.6"))) lib = "lib64";
    else lib = "lib";
  }
  let platform = opts.PLATFORM;
  if (platform === undefined) {
    // i386: AT_PLATFORM is "i686" (a 32-bit process on an x86-64 kernel, and glibc's choice on
    // any CPU with CMOV); measured with Debian's i386 loader: `$PLATFORM` -> i686.
    platform = loaderView(m, opts)?.platform ?? (m === "x86_64" ? intelPlatform(opts) : m === "i386" ? "i686" : null) ?? (m === canonMachine(host) ? host : m);
  }
  return { LIB: lib, PLATFORM: platform };
}

/**
 * The components of glibc's legacy hwcaps subdirectories (glibc < 2.37; `elf/dl-hwcaps.c`): `tls`,
 * the platform, then the names of the "important" hwcap bits the CPU has, highest bit first;
 * ld.so searches every non-empty combination (profile.ts `legacySubdirs`). x86-64: the platform
 * (`$PLATFORM`: `haswell`/`xeon_phi` on such Intel CPUs, else `x86_64`), `avx512_1`, `x86_64`;
 * i386: `i686`, `avx512_1`, `sse2`; both from this CPU (measured: `tls/x86_64/x86_64` ... on this
 * AMD machine, `tls/i686/sse2` ... with Debian's i386 loader). Other machines: `tls` only, since
 * their platform and hwcap names are those of a CPU this machine cannot see (under qemu-user:
 * `tls/aarch64/atomics`, `tls/v8l/neon/vfp`, `tls/altivec/dfp`, ...).
 */
export function legacyHwcapComponents(machine: number | string, platform: string | null, opts: CpuOptions = {}): string[] {
  const m = canonMachine(machine);
  if (m !== "x86_64" && m !== "i386") return ["tls"];
  const f = usableFlags(opts);
  const out = ["tls"];
  if (platform !== null) out.push(platform);
  if (avx512One(m, opts, f)) out.push("avx512_1");
  if (m === "x86_64") out.push("x86_64");
  else if (f.has("sse2")) out.push("sse2");
  return out;
}

/**
 * glibc's HWCAP_X86_AVX512_1: an Intel CPU with AVX-512 F/CD/BW/DQ/VL and without AVX-512 ER (the
 * running loader's legacy list says so directly where it prints one).
 */
function avx512One(machine: number | string, opts: CpuOptions, f: Set<string>): boolean {
  const legacy = loaderView(machine, opts)?.legacy;
  if (legacy) return legacy.includes("avx512_1");
  return cpuVendor(opts) === "GenuineIntel" && f.has("avx512cd") && !f.has("avx512er") && ["avx512bw", "avx512dq", "avx512vl"].every((x) => f.has(x));
}

const HWCAP_X86_64 = 1n << 1n;
const HWCAP_X86_AVX512_1 = 1n << 2n;
const HWCAP_TLS = 1n << 63n;
const X86_PLATFORM_SHIFT = 48n; // _DL_FIRST_PLATFORM; platforms i586, i686, haswell, xeon_phi

/**
 * The bits glibc 2.36-2.39 matched legacy-hwcap cache entries against, for `lookupCache`'s
 * `legacy` option (x86-64 only; undefined elsewhere). glibc >= 2.40 ignores such entries.
 */
export function legacyCacheHwcaps(machine: number | string = hostMachine(), opts: CpuOptions = {}): LegacyHwcapRule | undefined {
  if (canonMachine(machine) !== "x86_64") return undefined;
  const f = usableFlags(opts);
  const platform = loaderView(machine, opts)?.platform ?? intelPlatform(opts);
  let hwcap = HWCAP_X86_64 | HWCAP_TLS;
  if (avx512One(machine, opts, f)) hwcap |= HWCAP_X86_AVX512_1;
  const index = platform === "haswell" ? 2n : platform === "xeon_phi" ? 3n : -1n;
  return {
    hwcap,
    platformMask: 0xfn << X86_PLATFORM_SHIFT,
    platform: index < 0n ? 0n : 1n << (X86_PLATFORM_SHIFT + index),
  };
}
