/**
 * The target loader's fixed inputs (loader.md §15), with this machine's values as defaults:
 * default directories (those the target loader was built with, else Debian's multiarch ones for
 * the target, §8), the target loader's ABI path,
 * hwcaps subdirectories (§6: `glibc-hwcaps/<level>` and, for glibc <= 2.36, the legacy power set
 * such as `tls/haswell/avx512_1/x86_64`), `$LIB`, `$PLATFORM`, and the cache lookup options.
 * Which hwcaps rules apply is decided by the target loader's glibc release (loader-build.ts; a
 * `--root` tree has its own glibc), else by the release of the glibc running this process.
 */
import { activeHwcapsDirs, dstValues, legacyCacheHwcaps, legacyHwcapComponents } from "./hwcaps.js";
import { cacheFlagsFor, type LookupOptions } from "./ld-so-cache.js";
import { X86_64, type Target } from "./candidates.js";
import type { LoaderBuild } from "./loader-build.js";
import type { ResolverOptions } from "./types.js";

export const DEFAULT_INTERPRETER = "/lib64/ld-linux-x86-64.so.2";
export const LOADER_SONAME = "ld-linux-x86-64.so.2";

/**
 * glibc's loader path (`PT_INTERP` of programs its toolchain links) for a target, by the ABI
 * names glibc uses; null for targets not listed (then the x86-64 path is probed, and is absent).
 */
export function defaultInterpreter(t: Target): string | null {
  const f = t.eFlags ?? 0;
  switch (t.machine) {
    case 62:
      return t.elfClass === 2 ? DEFAULT_INTERPRETER : "/libx32/ld-linux-x32.so.2";
    case 3:
      return "/lib/ld-linux.so.2";
    case 183:
      return t.data === 1 ? "/lib/ld-linux-aarch64.so.1" : "/lib/ld-linux-aarch64_be.so.1";
    case 40: // EF_ARM_ABI_FLOAT_HARD
      return f & 0x400 ? "/lib/ld-linux-armhf.so.3" : "/lib/ld-linux.so.3";
    case 21:
      return t.data === 1 ? "/lib64/ld64.so.2" : "/lib64/ld64.so.1";
    case 20:
      return "/lib/ld.so.1";
    case 22:
      return t.elfClass === 2 ? "/lib/ld64.so.1" : "/lib/ld.so.1";
    case 243: // EF_RISCV_FLOAT_ABI_DOUBLE
      return t.elfClass === 2 ? ((f & 0x6) === 0x4 ? "/lib/ld-linux-riscv64-lp64d.so.1" : "/lib/ld-linux-riscv64-lp64.so.1") : null;
    case 258:
      return (f & 0x7) === 0x3 ? "/lib64/ld-linux-loongarch-lp64d.so.1" : "/lib64/ld-linux-loongarch-lp64s.so.1";
    case 8: // EF_MIPS_ABI2 (n32), EF_MIPS_NAN2008
      if (f & 0x400) return t.elfClass === 2 ? "/lib64/ld-linux-mipsn8.so.1" : f & 0x20 ? "/lib32/ld-linux-mipsn8.so.1" : "/lib/ld-linux-mipsn8.so.1";
      return t.elfClass === 2 ? "/lib64/ld.so.1" : f & 0x20 ? "/lib32/ld.so.1" : "/lib/ld.so.1";
    case 43:
      return "/lib64/ld-linux.so.2";
    case 2:
    case 42:
      return "/lib/ld-linux.so.2";
    case 4:
    case 15:
      return "/lib/ld.so.1";
  }
  return null;
}

/** Debian's multiarch directory names, for default directories when no loader can be read. */
const TRIPLETS: Record<number, (t: Target) => string | null> = {
  62: (t) => (t.elfClass === 2 ? "x86_64-linux-gnu" : "x86_64-linux-gnux32"),
  3: () => "i386-linux-gnu",
  183: () => "aarch64-linux-gnu",
  40: (t) => ((t.eFlags ?? 0) & 0x400 ? "arm-linux-gnueabihf" : "arm-linux-gnueabi"),
  21: (t) => (t.data === 1 ? "powerpc64le-linux-gnu" : "powerpc64-linux-gnu"),
  20: () => "powerpc-linux-gnu",
  22: () => "s390x-linux-gnu",
  243: () => "riscv64-linux-gnu",
  258: () => "loongarch64-linux-gnu",
};

/** Debian's default directories for a target (`/lib/<triplet>`, `/usr/lib/<triplet>`, `/lib`, `/usr/lib`). */
export function debianDirs(t: Target): string[] {
  const triplet = TRIPLETS[t.machine]?.(t);
  return triplet ? [`/lib/${triplet}`, `/usr/lib/${triplet}`, "/lib", "/usr/lib"] : ["/lib", "/usr/lib"];
}
export const VDSO_NAME = "linux-vdso.so.1";

export interface Profile {
  defaultDirs: string[];
  /**
   * Subdirectories tried in each directory, best first, ending with "" (the directory itself).
   * CPU-dependent: computed on first use (see `hwcapsComponents`).
   */
  readonly subdirs: string[];
  /**
   * Every name the first component of a `subdirs` entry can be, known without asking the CPU: a
   * directory holding none of them is searched in itself only, and the CPU's answer (which may
   * start the running loader, hwcaps.ts) is never needed for it.
   */
  hwcapsComponents: ReadonlySet<string>;
  lib: string;
  /** `$PLATFORM` (CPU-dependent on x86-64: computed on first use). */
  readonly platform: string | null;
  /** The cache lookup options; their CPU-dependent fields are computed on first use. */
  cacheOptions: LookupOptions;
  interpreter: string;
}

/** Defines `obj[key]` as a value computed on first read. */
function lazy<T extends object, K extends string>(obj: T, key: K, compute: () => unknown): void {
  Object.defineProperty(obj, key, {
    enumerable: true,
    configurable: true,
    get() {
      const value = compute();
      Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
      return value;
    },
  });
}

/**
 * Names a legacy hwcaps component can have on x86 (hwcaps.ts `legacyHwcapComponents`: `tls`, the
 * platform as glibc sets it, `avx512_1`, then `x86_64` or `sse2`); other machines' are `tls` only.
 */
const X86_LEGACY_NAMES = ["tls", "x86_64", "haswell", "xeon_phi", "avx512_1", "i686", "i586", "sse2"];

let glibcVersion: [number, number] | null | undefined;

/** The running glibc's version as [major, minor], or null (not glibc). */
function hostGlibc(): [number, number] | null {
  if (glibcVersion !== undefined) return glibcVersion;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  const m = /^(\d+)\.(\d+)/.exec(header?.glibcVersionRuntime ?? "");
  glibcVersion = m ? [Number(m[1]), Number(m[2])] : null;
  return glibcVersion;
}

/**
 * The legacy hwcaps subdirectories of glibc <= 2.36: every non-empty subset of the components,
 * largest first, in the order `ld.so` prints them (`tls/haswell/avx512_1/x86_64` ... `x86_64`).
 * A name that is both the platform and a hwcap (`x86_64` on AMD CPUs) makes ld.so try some
 * directories twice (`tls/x86_64` as platform, then as hwcap); each is kept once, where it first
 * comes.
 */
export function legacySubdirs(components: string[]): string[] {
  const n = components.length;
  const out = new Set<string>();
  for (let m = (1 << n) - 1; m > 0; m--) {
    out.add(components.filter((_, j) => (m & (1 << (n - 1 - j))) !== 0).join("/"));
  }
  return [...out];
}

/**
 * The profile of a target: `opts` first, then what the target loader was built with (`build`,
 * read from its bytes: loader-build.ts), then Debian 12's amd64 values.
 */
export function profileFor(opts: ResolverOptions, build: LoaderBuild | null = null, target: Target = X86_64): Profile {
  // The rules of the target loader's release (a --root tree's own glibc), else of the glibc
  // running this process (the host's loader is the one that will load the files).
  const glibc = build?.version ?? hostGlibc();
  const older = (minor: number): boolean => glibc !== null && glibc[0] === 2 && glibc[1] < minor;
  // `$LIB` does not depend on the CPU; `$PLATFORM`, the hwcaps levels and the legacy bits do, and
  // are computed only when a search needs them.
  const libGuess = (): string => dstValues({ machine: target.machine, PLATFORM: "" }).LIB;
  const platformOf = (): string | null => (opts.platform === undefined ? dstValues({ machine: target.machine, LIB: "" }).PLATFORM : opts.platform);
  // glibc-hwcaps subdirectories (and the cache entries for them) came with glibc 2.33.
  const levels = (): string[] => (older(33) ? [] : activeHwcapsDirs(target.machine));
  const given = opts.hwcapsSubdirs;
  const components = new Set<string>();
  if (given) for (const sub of given) if (sub !== "") components.add(sub.split("/")[0]!);
  if (!given && !older(33)) components.add("glibc-hwcaps");
  if (!given && older(37)) {
    components.add("tls");
    if (target.machine === 62 || target.machine === 3) {
      for (const n of X86_LEGACY_NAMES) components.add(n);
      if (opts.platform) components.add(opts.platform);
    }
  }
  const profile = {
    defaultDirs: opts.defaultDirs ?? build?.systemDirs ?? debianDirs(target),
    hwcapsComponents: components,
    lib: opts.lib ?? build?.lib ?? libGuess(),
  } as unknown as Profile;
  lazy(profile, "platform", platformOf);
  lazy(profile, "subdirs", () => {
    let subdirs = given;
    if (!subdirs) {
      subdirs = levels().map((l) => `glibc-hwcaps/${l}`);
      if (older(37)) subdirs.push(...legacySubdirs(legacyHwcapComponents(target.machine, profile.platform)));
    }
    return [...subdirs.filter((s) => s !== ""), ""];
  });
  const cacheOptions = { wantFlags: cacheFlagsFor(target.elfClass, target.machine, target.eFlags) } as unknown as LookupOptions;
  lazy(cacheOptions, "activeHwcaps", () =>
    given ? given.filter((s) => s.startsWith("glibc-hwcaps/")).map((s) => s.slice("glibc-hwcaps/".length)) : levels());
  lazy(cacheOptions, "legacy", () => (older(40) ? legacyCacheHwcaps(target.machine) : undefined));
  profile.cacheOptions = cacheOptions;
  profile.interpreter = opts.interpreter ?? defaultInterpreter(target) ?? DEFAULT_INTERPRETER;
  return profile;
}
