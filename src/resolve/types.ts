/**
 * Plain-data records of the static resolver (`resolver.ts`): what each DT_NEEDED of a load tree
 * resolves to, how, and what is wrong with it. Everything here is JSON- and structured-clone safe.
 */
import type { ElfInfo } from "../core/types.js";
import type { Target } from "./candidates.js";

/** How a DT_NEEDED entry was satisfied (loader.md §3). */
export type Via =
  /** A `DT_RPATH` in the requester's `l_loader` chain, or the executable's (`from` names it). */
  | "rpath"
  /** The requester's own `DT_RUNPATH` (`from` names it). */
  | "runpath"
  | "ld_library_path"
  /** `ld.so.cache`. */
  | "cache"
  /** The loader's built-in default directories. */
  | "default"
  /** An object already in the process, matched by path, requested name, SONAME or inode. */
  | "loaded"
  /** A name containing `/`, opened as written (relative to the CWD). */
  | "direct";

/**
 * - `found`: resolved (`path` set);
 * - `missing`: no candidate was accepted;
 * - `fatal`: an invalid candidate stopped the load (`error` says why);
 * - `skipped`: the name expanded to nothing (a token without a value); the loader ignores it.
 */
export type NeededStatus = "found" | "missing" | "fatal" | "skipped";

/** One directory a failed search tried, in order (libtree's "paths considered"). */
export interface SearchedDir {
  dir: string;
  via: Exclude<Via, "loaded" | "direct">;
}

/** One DT_NEEDED edge of the load tree. */
export interface NeededRecord {
  /** The DT_NEEDED string as written. */
  name: string;
  /** The object whose DT_NEEDED it is (the path it was opened by). */
  by: string;
  status: NeededStatus;
  /** The path the loader opens (not normalised, as `ld.so` prints it), or null. */
  path: string | null;
  via: Via | null;
  /** The object whose search path served it (`rpath`/`runpath`), else null. */
  from: string | null;
  /** The search-list directory that served it (`rpath`, `runpath`, `ld_library_path`, `default`, `cache`). */
  dir?: string;
  /** Versions `by` needs from this library (its Verneed) that the library does not define. */
  missingVersions: string[];
  /** The loader's message for a `missing` or `fatal` entry. */
  error?: string;
  /** For a `missing` entry: the directories tried, in order. */
  searched?: SearchedDir[];
}

/**
 * - `ok`: every library resolved and every version is there;
 * - `unresolved`: a library is missing or a required version is not defined;
 * - `error`: the loader would stop on an invalid candidate (or the file cannot be read);
 * - `not-loadable`: the file itself is not something this loader loads (other class or machine,
 *   a relocatable object...); nothing is resolved.
 */
export type FileStatus = "ok" | "unresolved" | "error" | "not-loadable";

export interface FileReport {
  type: "file";
  path: string;
  status: FileStatus;
  /** Every DT_NEEDED edge of the load tree, breadth-first in load order (the root's first). */
  needed: NeededRecord[];
  /** Names that did not resolve anywhere in the tree (each once). */
  missing: string[];
  /** Loader messages: fatal candidates, missing versions, an unloadable root. */
  errors: string[];
  /** Non-fatal loader messages ("no version information available"). */
  warnings: string[];
}

/** How each root file is loaded. */
export type LoadMode =
  /** `dlopen(absolute path)` from the `exe` program (or from a program with nothing loaded). */
  | "dlopen"
  /** As the main program started by the kernel (its `$ORIGIN` has symlinks resolved). */
  | "exec"
  /** As `ld.so --list FILE` (glibc < 2.42: `$ORIGIN` from the path as given, not canonicalised). */
  | "list";

export interface ResolverOptions {
  mode?: LoadMode;
  /** dlopen mode: the program that loads each file (its RPATH and loaded set apply). */
  exe?: string | null;
  /** The `LD_LIBRARY_PATH` string (null: unset). */
  ldLibraryPath?: string | null;
  /** Host directory that stands for `/` (cache, default dirs, absolute paths). */
  root?: string;
  /** The target's current directory (default: this process's, or `/` under `root`). */
  cwd?: string;
  /**
   * Built-in default directories (default: those the target loader, `interpreter` under `root`,
   * was built with, read from its bytes; Debian's four multiarch ones for the target when that
   * cannot be read).
   */
  defaultDirs?: string[];
  /** hwcaps subdirectories tried in each directory, best first (default: this CPU's). */
  hwcapsSubdirs?: string[];
  /** `$LIB` and `$PLATFORM` (default: this machine's loader). */
  lib?: string;
  platform?: string | null;
  /**
   * Cache file (virtual path; default: the target loader's, as for `defaultDirs`, else
   * `/etc/ld.so.cache`); null: no cache.
   */
  cachePath?: string | null;
  /** The loader's own path when nothing names it (`PT_INTERP` otherwise). */
  interpreter?: string;
  /**
   * The kind of loader modelled (class, byte order, machine). Default: the `exe` program's; without
   * one, this machine's, and each file of another kind is resolved by a loader of its own kind.
   */
  target?: Target;
  /**
   * How a loaded file is to be seen, given its `dev:ino` key, host path and info as read (a batch
   * resolves the libraries it is about to edit as they will be after the edit). Default: as read.
   */
  plannedInfo?: (key: string, path: string, info: ElfInfo) => ElfInfo;
}
