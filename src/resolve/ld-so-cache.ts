/**
 * Reads `/etc/ld.so.cache` and answers lookups the way glibc's `ld.so` does (loader.md §8-§9).
 *
 * Layouts: old (`ld.so-1.7.0`), new (`glibc-ld.so.cache1.1`, the default since 2.32) and compat (an
 * old table with a complete new cache embedded after it; `ld.so` then uses only the new table, so
 * `entries` holds that table). Integers are in the writer's byte order: the new header's flags say
 * which; an old or "unset" file is read little-endian unless only big-endian gives a plausible size.
 * Any inconsistency (truncation, offsets or strings outside the file, a bad extension directory)
 * throws `RESOLVE_BAD_CACHE`; the parser never reads out of bounds.
 *
 * Lookup (`search_cache`): binary search with `_dl_cache_libcmp` over the descending key order, back
 * to the first equal key, then over the equal keys: entries whose flags ld.so does not accept are
 * skipped; `glibc-hwcaps` entries compete by the priority of their subdirectory among the active
 * ones; the first accepted plain entry ends the search (and loses to any hwcaps match). Legacy
 * hwcap entries (non-zero `hwcap` without the extension bit) follow glibc >= 2.40, which ignores
 * them; pass `legacy` to get the 2.36-2.39 rule instead (Debian 12 ships 2.36).
 */
import { readFileSync } from "node:fs";
import { noteConsulted } from "../shared/consulted.js";
import { ElfPatchError, ErrorCode } from "../errors.js";

export type LdCacheFormat = "old" | "new" | "compat";
export type LdCacheEndian = "little" | "big" | "unset";

/**
 * One cache entry. `name` is the key (a SONAME such as `libz.so.1`); `flags` has the type in its low
 * byte (3 libc6, 1 ELF) and the ABI in its high byte (0x0300 x86-64); `hwcap` is 0 for plain entries
 * and for every entry of an old-format cache. glibc-hwcaps entries (extension bit 62) also carry
 * `hwcapsIndex` (into the name table), `glibcHwcaps` (e.g. `x86-64-v3`, as the writer stored it) and
 * `isaLevel` (bits 32-41; ldconfig 2.36 writes 0).
 */
export interface LdCacheEntry {
  name: string;
  path: string;
  flags: number;
  hwcap: bigint;
  hwcapsIndex?: number;
  glibcHwcaps?: string;
  isaLevel?: number;
}

export interface LdCache {
  format: LdCacheFormat;
  endian: LdCacheEndian;
  /** The ldconfig that wrote the file (extension tag 0), e.g. "ldconfig (Debian GLIBC 2.36-9...) ...". */
  generator: string | null;
  /** glibc-hwcaps subdirectory names (extension tag 1), sorted by strcmp. */
  hwcaps: string[];
  /**
   * The same names as ld.so (and `ldconfig -p`) read them: relative to the file start, not to the new
   * header. Equal to `hwcaps` for a new-format file; garbage or "" in a compat file, where ld.so then
   * never picks a glibc-hwcaps entry (observed on 2.36, still so in master). Lookups use these.
   */
  loaderHwcaps: string[];
  /** In file order, which is the loader's search order. */
  entries: LdCacheEntry[];
}

/**
 * The glibc 2.36-2.39 test for legacy hwcap entries (`legacyCacheHwcaps` in hwcaps.ts): `hwcap` is
 * the usable bits (`dl_hwcap & hwcap_mask`) plus TLS (1 << 63); `platformMask` the platform field
 * (`_DL_HWCAP_PLATFORM`, 0xf << 48 on x86); `platform` the current platform's bit, or 0.
 */
export interface LegacyHwcapRule {
  hwcap: bigint;
  platformMask: bigint;
  platform: bigint;
}

export interface LookupOptions {
  /** Active glibc-hwcaps subdirectories, most preferred first (hwcaps.ts `activeHwcapsDirs`). */
  activeHwcaps: readonly string[];
  /** Entry flags the loader accepts (`cacheFlagsFor`). */
  wantFlags: readonly number[];
  /** `DF_1_NODEFLIB` on the requesting object: a hit that starts with one of these dirs is dropped. */
  nodeflib?: { systemDirs: readonly string[] };
  /** ISA-level test for glibc-hwcaps entries (`dl_cache_hwcap_isa_level_compatible`); default: all. */
  isaLevelOk?: (level: number) => boolean;
  /** Emulate glibc 2.36-2.39 for legacy hwcap entries; absent = glibc >= 2.40 (ignore them). */
  legacy?: LegacyHwcapRule;
}

export interface LookupResult {
  entry: LdCacheEntry | null;
  /** Set when the loader's cache hit was dropped because of `DF_1_NODEFLIB` (then `entry` is null). */
  nodeflibRejected?: string;
}

const OLD_MAGIC = "ld.so-1.7.0";
const NEW_MAGIC = "glibc-ld.so.cache1.1";
const [OLD_HEADER, OLD_ENTRY, NEW_HEADER, NEW_ENTRY] = [16, 12, 48, 24];
const EXT_MAGIC = 0xeaa42174;
const HWCAP_EXT_HIGH = 1n << 30n; // DL_CACHE_HWCAP_EXTENSION (bit 62) seen in the upper 32 bits
const ISA_MASK = 0x3ffn;

const decoder = new TextDecoder("utf-8");

function bad(message: string): never {
  throw new ElfPatchError(ErrorCode.RESOLVE_BAD_CACHE, message);
}

function hasMagic(b: Uint8Array, at: number, magic: string): boolean {
  if (at + magic.length > b.length) return false;
  for (let i = 0; i < magic.length; i++) if (b[at + i] !== magic.charCodeAt(i)) return false;
  return true;
}

/** NUL-terminated string at `at`, or null when it is out of the file or unterminated. */
function cstr(b: Uint8Array, at: number): string | null {
  if (at < 0 || at >= b.length) return null;
  const end = b.indexOf(0, at);
  return end < 0 ? null : decoder.decode(b.subarray(at, end));
}

function needStr(b: Uint8Array, at: number): string {
  return cstr(b, at) ?? bad("Loader cache string is outside the file");
}

/** Parses a cache file's bytes. Throws `ElfPatchError` (`RESOLVE_BAD_CACHE`) on a malformed file. */
export function parseLdCache(bytes: Uint8Array): LdCache {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = bytes.length;
  if (hasMagic(bytes, 0, NEW_MAGIC)) return parseNew(bytes, dv, 0, "new");
  if (!hasMagic(bytes, 0, OLD_MAGIC)) bad("Not a loader cache file (bad magic)");
  if (size < OLD_HEADER) bad("Loader cache is truncated");
  const le = OLD_HEADER + OLD_ENTRY * dv.getUint32(12, true) <= size || OLD_HEADER + OLD_ENTRY * dv.getUint32(12, false) > size;
  const nlibs = dv.getUint32(12, le);
  if (OLD_HEADER + OLD_ENTRY * nlibs > size) bad("Loader cache is truncated");
  const strings = OLD_HEADER + OLD_ENTRY * nlibs;
  const embedded = (strings + 7) & ~7; // ALIGN_CACHE: alignof(struct cache_file_new) = 8
  if (hasMagic(bytes, embedded, NEW_MAGIC)) return parseNew(bytes, dv, embedded, "compat");
  const entries: LdCacheEntry[] = [];
  for (let i = 0; i < nlibs; i++) {
    const at = OLD_HEADER + OLD_ENTRY * i;
    const name = needStr(bytes, strings + dv.getUint32(at + 4, le));
    entries.push({ name, path: needStr(bytes, strings + dv.getUint32(at + 8, le)), flags: dv.getInt32(at, le), hwcap: 0n });
  }
  return { format: "old", endian: le ? "little" : "big", generator: null, hwcaps: [], loaderHwcaps: [], entries };
}

function parseNew(b: Uint8Array, dv: DataView, base: number, format: LdCacheFormat): LdCache {
  const size = b.length;
  if (base + NEW_HEADER > size) bad("Loader cache is truncated");
  const order = b[base + 28]! & 3;
  if (order === 1) bad("Loader cache is marked invalid");
  const fits = (little: boolean): boolean => {
    const n = dv.getUint32(base + 20, little);
    return base + NEW_HEADER + NEW_ENTRY * n + dv.getUint32(base + 24, little) <= size;
  };
  const le = order === 2 || (order === 0 && (fits(true) || !fits(false)));
  const nlibs = dv.getUint32(base + 20, le);
  if (!fits(le)) bad("Loader cache is truncated");
  const extOffset = dv.getUint32(base + 32, le);
  let generator: string | null = null;
  let hwcaps: string[] = [];
  let loaderHwcaps: string[] = [];
  if (extOffset !== 0) {
    // The extension directory and its sections use file offsets (not header-relative ones).
    const ok = extOffset % 4 === 0 && extOffset + 8 <= size && dv.getUint32(extOffset, le) === EXT_MAGIC;
    const count = ok ? dv.getUint32(extOffset + 4, le) : 0;
    if (!ok || extOffset + 8 + 16 * count > size) bad("Loader cache extension directory is invalid");
    for (let i = 0; i < count; i++) {
      const at = extOffset + 8 + 16 * i;
      const [tag, off, len] = [dv.getUint32(at, le), dv.getUint32(at + 8, le), dv.getUint32(at + 12, le)];
      if (off + len > size) bad("Loader cache extension section is outside the file");
      if (tag === 0) {
        generator = decoder.decode(b.subarray(off, off + len)).replace(/\0+$/, "");
      } else if (tag === 1 && len > 0 && off % 4 === 0 && len % 4 === 0) {
        // ld.so drops a misaligned or empty table (cache_extension_verify); so do we.
        const idx = Array.from({ length: len / 4 }, (_, j) => dv.getUint32(off + 4 * j, le));
        hwcaps = idx.map((x) => needStr(b, base + x));
        loaderHwcaps = idx.map((x) => cstr(b, x) ?? "");
      }
    }
  }
  const entries: LdCacheEntry[] = [];
  for (let i = 0; i < nlibs; i++) {
    const at = base + NEW_HEADER + NEW_ENTRY * i;
    const [hwcap, name] = [dv.getBigUint64(at + 16, le), needStr(b, base + dv.getUint32(at + 4, le))];
    const entry: LdCacheEntry = { name, path: needStr(b, base + dv.getUint32(at + 8, le)), flags: dv.getInt32(at, le), hwcap };
    if (((hwcap >> 32n) & ~ISA_MASK) === HWCAP_EXT_HIGH) {
      entry.hwcapsIndex = Number(hwcap & 0xffffffffn);
      if (hwcaps[entry.hwcapsIndex] !== undefined) entry.glibcHwcaps = hwcaps[entry.hwcapsIndex];
      entry.isaLevel = Number((hwcap >> 32n) & ISA_MASK);
    }
    entries.push(entry);
  }
  const endian: LdCacheEndian = order === 0 ? "unset" : le ? "little" : "big";
  return { format, endian, generator, hwcaps, loaderHwcaps, entries };
}

/**
 * Reads and parses a cache file. Returns null when there is none (ld.so then has no cache); a
 * malformed file throws `RESOLVE_BAD_CACHE` with the path in the error's details.
 */
export function readLdCache(path = "/etc/ld.so.cache"): LdCache | null {
  let bytes: Uint8Array;
  noteConsulted(path);
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw new ElfPatchError(ErrorCode.IO_READ, "Can't read the loader cache", { path, cause: err });
  }
  try {
    return parseLdCache(bytes);
  } catch (err) {
    if (err instanceof ElfPatchError) throw new ElfPatchError(err.code, err.message, { path, cause: err });
    throw err;
  }
}

const isDigit = (c: number): boolean => c >= 48 && c <= 57;

/**
 * glibc's `_dl_cache_libcmp`: runs of digits compare as numbers (so `libfoo.so.01` equals
 * `libfoo.so.1`), a digit sorts after a non-digit, other characters by code. Only the sign counts.
 * Digit runs accumulate as 32-bit `int`s and wrap, as in glibc.
 */
export function libcmp(a: string, b: string): number {
  let [i, j] = [0, 0];
  while (i < a.length) {
    const c1 = a.charCodeAt(i);
    const c2 = j < b.length ? b.charCodeAt(j) : 0;
    if (isDigit(c1)) {
      if (!isDigit(c2)) return 1;
      let [v1, v2] = [0, 0];
      while (i < a.length && isDigit(a.charCodeAt(i))) v1 = (v1 * 10 + a.charCodeAt(i++) - 48) | 0;
      while (j < b.length && isDigit(b.charCodeAt(j))) v2 = (v2 * 10 + b.charCodeAt(j++) - 48) | 0;
      if (v1 !== v2) return (v1 - v2) | 0;
    } else if (isDigit(c2)) {
      return -1;
    } else if (c1 !== c2) {
      return c1 - c2;
    } else {
      i++;
      j++;
    }
  }
  return j < b.length ? -b.charCodeAt(j) : 0;
}

/** The entry ld.so takes from the cache for `name`, with the reason when DF_1_NODEFLIB dropped it. */
export function lookupCacheEntry(cache: LdCache, name: string, opts: LookupOptions): LookupResult {
  const list = cache.entries;
  let [left, right, mid] = [0, list.length - 1, -1];
  while (left <= right) {
    const m = (left + right) >>> 1;
    const c = libcmp(name, list[m]!.name);
    if (c === 0) {
      mid = m;
      break;
    }
    if (c < 0) left = m + 1; // keys are sorted in descending order
    else right = m - 1;
  }
  if (mid < 0) return { entry: null };
  while (mid > 0 && libcmp(name, list[mid - 1]!.name) === 0) mid--;

  const isaOk = opts.isaLevelOk ?? (() => true);
  let best: LdCacheEntry | null = null;
  let bestPrio = Infinity;
  for (let i = mid; i <= right && libcmp(name, list[i]!.name) === 0; i++) {
    const e = list[i]!;
    if (!opts.wantFlags.includes(e.flags)) continue;
    if (e.hwcapsIndex !== undefined) {
      if (!isaOk(e.isaLevel ?? 0)) continue;
      const prio = opts.activeHwcaps.indexOf(cache.loaderHwcaps[e.hwcapsIndex] ?? "");
      if (prio >= 0 && prio < bestPrio) {
        best = e;
        bestPrio = prio;
      }
      continue;
    }
    if (best) break; // the hwcaps entries (sorted first) are exhausted
    if (e.hwcap !== 0n && !legacyUsable(e.hwcap, opts.legacy)) continue;
    best = e;
    break;
  }
  if (best && opts.nodeflib) {
    const hit = best.path;
    const dirs = opts.nodeflib.systemDirs.map((d) => (d.endsWith("/") ? d : `${d}/`));
    if (dirs.some((d) => hit.startsWith(d))) return { entry: null, nodeflibRejected: hit };
  }
  return { entry: best };
}

function legacyUsable(hwcap: bigint, rule: LegacyHwcapRule | undefined): boolean {
  if (!rule) return false; // glibc >= 2.40
  if ((hwcap & ~(rule.hwcap | rule.platformMask)) !== 0n) return false;
  const plat = hwcap & rule.platformMask;
  return plat === 0n || plat === rule.platform;
}

/** The path ld.so takes from the cache for `name`, or null (no entry, or dropped by nodeflib). */
export function lookupCache(cache: LdCache, name: string, opts: LookupOptions): string | null {
  return lookupCacheEntry(cache, name, opts).entry?.path ?? null;
}

const EM_MIPS = 8, EM_PPC64 = 21, EM_S390 = 22, EM_ARM = 40, EM_SPARCV9 = 43;
const EM_X86_64 = 62, EM_AARCH64 = 183, EM_RISCV = 243, EM_LOONGARCH = 258;

/**
 * The entry flags a glibc loader for this ELF class (1 = 32-bit, 2 = 64-bit) and `e_machine` accepts
 * (`_dl_cache_check_flags`). `eFlags` (the ELF header's `e_flags`) picks the float ABI on ARM, MIPS,
 * RISC-V and LoongArch; without it ARM accepts both ABIs. Ports without their own rule (i386,
 * 32-bit PowerPC/s390/SPARC, m68k, Alpha, ...) use glibc's generic rule: 1 (ELF) or 3 (libc6);
 * ldconfig writes 1 for an i386 library without `libc.so.6` in its DT_NEEDED and 3 otherwise.
 */
export function cacheFlagsFor(elfClass: number, machine: number, eFlags?: number): number[] {
  const is64 = elfClass === 2;
  const f = eFlags ?? 0;
  const only64: Record<number, number> = { [EM_AARCH64]: 0x0a03, [EM_PPC64]: 0x0503, [EM_S390]: 0x0403, [EM_SPARCV9]: 0x0103 };
  if (is64 && only64[machine] !== undefined) return [only64[machine]!];
  switch (machine) {
    case EM_X86_64:
      return [is64 ? 0x0303 : 0x0803]; // x86-64 or x32
    case EM_ARM: // unmarked (plain libc6) objects are accepted by both float ABIs
      if (eFlags === undefined) return [0x0903, 0x0b03, 0x0003];
      return [f & 0x400 ? 0x0903 : 0x0b03, 0x0003]; // EF_ARM_ABI_FLOAT_HARD
    case EM_MIPS: {
      const nan2008 = (f & 0x400) !== 0; // EF_MIPS_NAN2008
      if (is64) return [nan2008 ? 0x0e03 : 0x0703];
      if (f & 0x20) return [nan2008 ? 0x0d03 : 0x0603]; // EF_MIPS_ABI2: n32
      if (nan2008) return [0x0c03];
      break;
    }
    case EM_RISCV:
      return [(f & 0x6) === 0x4 ? 0x1003 : 0x0f03]; // EF_RISCV_FLOAT_ABI_DOUBLE, else soft
    case EM_LOONGARCH: // not verified on hardware: double-float lp64d, else soft-float
      return [(f & 0x7) === 0x3 ? 0x1203 : 0x1103];
  }
  return [0x0001, 0x0003];
}
