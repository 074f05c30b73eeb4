/**
 * The search for a name without `/` (loader.md §3, `_dl_map_new_object`):
 * 1. `DT_RPATH` of the requester, its `l_loader`, and so on, then the executable's, all skipped
 *    when the requester has `DT_RUNPATH` (an object with `DT_RUNPATH` has no RPATH of its own, but
 *    the chain walks through it);
 * 2. `LD_LIBRARY_PATH`;  3. the requester's own `DT_RUNPATH`;  4. `ld.so.cache`;
 * 5. the default directories. With `DF_1_NODEFLIB` on the requester, cache hits inside a default
 *    directory are dropped and step 5 is skipped.
 * Inside each directory the hwcaps subdirectories come first, best first.
 */
import { lookupCacheEntry, type LdCache, type LookupOptions } from "./ld-so-cache.js";
import type { LibFile } from "./candidates.js";
import type { Candidates } from "./candidates.js";
import { dirnameOf, joinDir, runPathDirs, type DstValues } from "./expand.js";
import type { LoadedObject } from "./load-set.js";
import type { SearchedDir, Via } from "./types.js";

type SearchVia = SearchedDir["via"];

/** Everything a search needs besides the requester. */
export interface SearchEnv {
  candidates: Candidates;
  /**
   * hwcaps subdirectories ("glibc-hwcaps/x86-64-v3", legacy "tls/haswell"...), best first, then ""
   * (read only for a directory that holds one of `hwcapsComponents`: it may ask the CPU).
   */
  readonly subdirs: readonly string[];
  /** The names a first component of `subdirs` can have (profile.ts). */
  hwcapsComponents: ReadonlySet<string>;
  /** Expanded `LD_LIBRARY_PATH`, or null. */
  libraryPath: string[] | null;
  defaultDirs: readonly string[];
  cache: LdCache | null;
  cacheOptions: LookupOptions;
  /** `$LIB` and `$PLATFORM` (the origin comes from each object). */
  dst: Omit<DstValues, "origin">;
  /** Called with every run-path directory list the first time it is consulted. */
  onRunPath?: (owner: LoadedObject, via: "rpath" | "runpath", dirs: string[]) => void;
}

export type SearchResult =
  | { kind: "found"; path: string; file: LibFile; via: Via; from: LoadedObject | null; dir: string }
  | { kind: "fatal"; path: string; message: string }
  /** `tried`: some candidate was opened (the loader's message then carries its errno text). */
  | { kind: "missing"; otherClass: boolean; tried: boolean; searched: SearchedDir[] };

interface Source {
  via: SearchVia;
  owner: LoadedObject | null;
  dirs: readonly string[];
}

/** `dst` with an origin; its `platform` stays a lazy read (a spread would compute it). */
function withOrigin(dst: Omit<DstValues, "origin">, origin: string | null): DstValues {
  return Object.assign(Object.create(dst) as DstValues, { origin });
}

export function hasRunpathTag(obj: LoadedObject): boolean {
  return obj.info?.runpath != null;
}

export function hasNodeflib(obj: LoadedObject): boolean {
  return obj.info?.flags1.includes("NODEFLIB") ?? false;
}

/** The object's effective `DT_RPATH` directories (none when it also has `DT_RUNPATH`). */
export function rpathOf(obj: LoadedObject, env: SearchEnv): string[] | null {
  if (obj.rpathDirs === undefined) {
    const raw = obj.info?.rpath;
    obj.rpathDirs = raw != null && !hasRunpathTag(obj) ? runPathDirs(raw, withOrigin(env.dst, obj.origin)) : null;
    if (obj.rpathDirs) env.onRunPath?.(obj, "rpath", obj.rpathDirs);
  }
  return obj.rpathDirs;
}

export function runpathOf(obj: LoadedObject, env: SearchEnv): string[] | null {
  if (obj.runpathDirs === undefined) {
    const raw = obj.info?.runpath;
    obj.runpathDirs = raw != null ? runPathDirs(raw, withOrigin(env.dst, obj.origin)) : null;
    if (obj.runpathDirs) env.onRunPath?.(obj, "runpath", obj.runpathDirs);
  }
  return obj.runpathDirs;
}

/** Steps 1-3 and 5 as directory lists; `null` marks where the cache is consulted. */
function sources(requester: LoadedObject, main: LoadedObject | null, env: SearchEnv): (Source | null)[] {
  const out: (Source | null)[] = [];
  if (!hasRunpathTag(requester)) {
    let didMain = false;
    for (let l: LoadedObject | null = requester; l; l = l.loader) {
      const dirs = rpathOf(l, env);
      if (!dirs) continue;
      out.push({ via: "rpath", owner: l, dirs });
      if (l === main) didMain = true;
    }
    const mainDirs = main && !didMain ? rpathOf(main, env) : null;
    if (main && mainDirs) out.push({ via: "rpath", owner: main, dirs: mainDirs });
  }
  if (env.libraryPath) out.push({ via: "ld_library_path", owner: null, dirs: env.libraryPath });
  const runpath = runpathOf(requester, env);
  if (runpath) out.push({ via: "runpath", owner: requester, dirs: runpath });
  out.push(null);
  if (!hasNodeflib(requester)) out.push({ via: "default", owner: null, dirs: env.defaultDirs });
  return out;
}

type Step = SearchResult | { kind: "next"; otherClass: boolean; tried: boolean };

/** `open_path`: each directory, hwcaps subdirectories first; an odd open error ends this list. */
function openPath(name: string, src: Source, env: SearchEnv, searched: SearchedDir[]): Step {
  let otherClass = false;
  for (const dir of src.dirs) {
    searched.push({ dir, via: src.via });
    for (const sub of mayHaveHwcaps(dir, env) ? env.subdirs : ONLY_DIR) {
      const path = joinDir(dir, sub === "" ? name : `${sub}/${name}`);
      const p = env.candidates.probe(path);
      if (p.kind === "ok") return { kind: "found", path, file: p.file, via: src.via, from: src.owner, dir };
      if (p.kind === "fatal") return { kind: "fatal", path, message: p.message };
      if (p.kind === "abandon") return { kind: "next", otherClass, tried: true };
      if (p.kind === "other-class") otherClass = true;
    }
  }
  return { kind: "next", otherClass, tried: src.dirs.length > 0 };
}

const ONLY_DIR: readonly string[] = [""];

/**
 * Whether `dir` may hold a hwcaps subdirectory: an entry named like a first component of one
 * (one listing of `dir`, cached, which the search of the directory itself needs anyway). A
 * directory with none is searched in itself only, without asking which subdirectories the CPU
 * selects.
 */
function mayHaveHwcaps(dir: string, env: SearchEnv): boolean {
  for (const c of env.hwcapsComponents) if (env.candidates.mayExist(joinDir(dir, c))) return true;
  return false;
}

function fromCache(name: string, requester: LoadedObject, env: SearchEnv, searched: SearchedDir[]): Step {
  if (!env.cache) return { kind: "next", otherClass: false, tried: false };
  searched.push({ dir: "ld.so.cache", via: "cache" });
  // (Its CPU-dependent options are computed on first read: kept lazy through the prototype.)
  const opts: LookupOptions = hasNodeflib(requester)
    ? Object.assign(Object.create(env.cacheOptions) as LookupOptions, { nodeflib: { systemDirs: env.defaultDirs } })
    : env.cacheOptions;
  const path = lookupCacheEntry(env.cache, name, opts).entry?.path;
  if (!path) return { kind: "next", otherClass: false, tried: false };
  const p = env.candidates.probe(path);
  if (p.kind === "ok") return { kind: "found", path, file: p.file, via: "cache", from: null, dir: dirnameOf(path) };
  if (p.kind === "fatal") return { kind: "fatal", path, message: p.message };
  return { kind: "next", otherClass: p.kind === "other-class", tried: true };
}

/** Searches for `name` (no `/`) on behalf of `requester`. */
export function searchName(name: string, requester: LoadedObject, main: LoadedObject | null, env: SearchEnv): SearchResult {
  const searched: SearchedDir[] = [];
  let otherClass = false;
  let tried = false;
  for (const src of sources(requester, main, env)) {
    const step = src ? openPath(name, src, env, searched) : fromCache(name, requester, env, searched);
    if (step.kind !== "next") return step;
    otherClass ||= step.otherClass;
    tried ||= step.tried;
  }
  return { kind: "missing", otherClass, tried, searched };
}
