/**
 * The target loader's fixed inputs (loader.md §15), with this machine's values as defaults:
 * default directories (those the target loader was built with, else Debian x86-64's, §8),
 * hwcaps subdirectories (§6: `glibc-hwcaps/<level>` and, for glibc <= 2.36, the legacy power set
 * such as `tls/haswell/avx512_1/x86_64`), `$LIB`, `$PLATFORM`, and the cache lookup options.
 */
import { activeHwcapsDirs, dstValues, legacyCacheHwcaps } from "./hwcaps.js";
import { cacheFlagsFor, type LookupOptions } from "./ld-so-cache.js";
import { TARGET } from "./candidates.js";
import type { LoaderBuild } from "./loader-build.js";
import type { ResolverOptions } from "./types.js";

/** `SYSTEM_DIRS` of Debian 12's amd64 glibc (measured with `ld.so --help`). */
export const DEBIAN_X86_64_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"];
export const DEFAULT_INTERPRETER = "/lib64/ld-linux-x86-64.so.2";
export const LOADER_SONAME = "ld-linux-x86-64.so.2";
export const VDSO_NAME = "linux-vdso.so.1";

export interface Profile {
  defaultDirs: string[];
  /** Subdirectories tried in each directory, best first, ending with "" (the directory itself). */
  subdirs: string[];
  lib: string;
  platform: string | null;
  cacheOptions: LookupOptions;
  interpreter: string;
}

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
 */
export function legacySubdirs(components: string[]): string[] {
  const n = components.length;
  const out: string[] = [];
  for (let m = (1 << n) - 1; m > 0; m--) {
    out.push(components.filter((_, j) => (m & (1 << (n - 1 - j))) !== 0).join("/"));
  }
  return out;
}

/** This CPU's legacy components: `tls`, the platform, then hwcap names (highest bit first). */
function legacyComponents(platform: string): string[] {
  const rule = legacyCacheHwcaps(TARGET.machine);
  if (!rule) return [];
  const out = ["tls"];
  if (rule.platform !== 0n) out.push(platform);
  if (rule.hwcap & (1n << 2n)) out.push("avx512_1");
  if (rule.hwcap & (1n << 1n)) out.push("x86_64");
  return out;
}

/**
 * The profile of a target: `opts` first, then what the target loader was built with (`build`,
 * read from its bytes: loader-build.ts), then Debian 12's amd64 values.
 */
export function profileFor(opts: ResolverOptions, build: LoaderBuild | null = null): Profile {
  const glibc = hostGlibc();
  const older = (minor: number): boolean => glibc !== null && glibc[0] === 2 && glibc[1] < minor;
  const dst = dstValues({ machine: TARGET.machine });
  const platform = opts.platform === undefined ? dst.PLATFORM : opts.platform;
  const levels = activeHwcapsDirs(TARGET.machine);
  let subdirs = opts.hwcapsSubdirs;
  if (!subdirs) {
    subdirs = levels.map((l) => `glibc-hwcaps/${l}`);
    if (older(37) && platform !== null) subdirs.push(...legacySubdirs(legacyComponents(platform)));
  }
  const cacheOptions: LookupOptions = {
    activeHwcaps: opts.hwcapsSubdirs
      ? opts.hwcapsSubdirs.filter((s) => s.startsWith("glibc-hwcaps/")).map((s) => s.slice("glibc-hwcaps/".length))
      : levels,
    wantFlags: cacheFlagsFor(TARGET.elfClass, TARGET.machine),
  };
  const legacy = older(40) ? legacyCacheHwcaps(TARGET.machine) : undefined;
  if (legacy) cacheOptions.legacy = legacy;
  return {
    defaultDirs: opts.defaultDirs ?? build?.systemDirs ?? DEBIAN_X86_64_DIRS,
    subdirs: [...subdirs.filter((s) => s !== ""), ""],
    lib: opts.lib ?? dst.LIB,
    platform,
    cacheOptions,
    interpreter: opts.interpreter ?? DEFAULT_INTERPRETER,
  };
}
