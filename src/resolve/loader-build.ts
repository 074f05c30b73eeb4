/**
 * What a glibc `ld.so` was built with, read from the loader file itself without running it
 * (loader.md §8, §12, §15): its default directories, the path of its cache, its glibc release and
 * the value of `$LIB`.
 *
 * glibc compiles its trusted directories into the loader as one string constant, `SYSTEM_DIRS`
 * (`elf/gen-trusted-dirs.awk`: slibdir and libdir, each with a trailing `/`, NUL-separated, e.g.
 * `/lib/x86_64-linux-gnu/\0/usr/lib/x86_64-linux-gnu/\0/lib/\0/usr/lib/\0` on Debian,
 * `/lib64/\0/usr/lib64/\0` upstream, `<glibc>/lib/\0` on NixOS), and the cache path as a string
 * (`/etc/ld.so.cache`; nixpkgs: `<glibc>/etc/ld.so.cache`). `ld.so --help` prints both (glibc >=
 * 2.33), but running a loader means running code from the tree (a container image under
 * `--root`, another architecture), so they are found in its bytes: the first run of consecutive
 * NUL-terminated absolute paths ending in a `lib`, `lib32`, `lib64`, `libx32` or multiarch
 * (`lib/<triplet>`) directory and `/`, and the first NUL-terminated absolute path ending in
 * `/ld.so.cache`. Checked against `ld.so --help` of the host's loader and of Debian's i386, arm64,
 * ppc64, s390x and powerpc loaders (test/unit/resolve/loader-build.test.ts).
 *
 * The release decides which search rules apply (profile.ts): glibc-hwcaps subdirectories (2.33),
 * legacy hwcaps subdirectories (gone in 2.37), legacy cache entries (ignored from 2.40). A tree
 * under `--root` (a container image, another distribution) has its own glibc, so the release is the
 * loader's, not that of the glibc running this process: the string its `--version` prints
 * ("... release version 2.41.", glibc >= 2.33), else its file name (`ld-2.31.so`: glibc < 2.34
 * installed the loader under its release, the ABI name being a symlink to it).
 */
import { readFileSync, realpathSync } from "node:fs";
import { basename } from "node:path";
import { noteConsulted } from "../shared/consulted.js";

export interface LoaderBuild {
  /** Default directories in search order, without the trailing `/`; null when not found. */
  systemDirs: string[] | null;
  /** The cache the loader reads; null when not found. */
  cachePath: string | null;
  /** The glibc release [major, minor]; null when neither the bytes nor the file name tell it. */
  version: [number, number] | null;
  /** What `$LIB` expands to (`lib/x86_64-linux-gnu`, `lib32`, `lib64`, `lib`); null when not found. */
  lib: string | null;
}

/**
 * `$LIB`'s value is a string constant of the loader (glibc's `DL_DST_LIB`, its slibdir's last
 * part): Debian's multiarch `lib/<triplet>`, `lib32` for Debian's biarch i386 loader (measured),
 * and by glibc's build rules `lib64` for an upstream 64-bit build, `lib` for a 32-bit one (not
 * measured here). It stands alone between NULs; the most specific form found wins (each of the 18
 * Debian loaders at hand has exactly one).
 */
const LIB_VALUE = /^lib(?:32|64|x32)?(?:\/[a-z0-9_]+-linux-[a-z0-9_]+)?$/;

function libValueOf(buf: Buffer): string | null {
  let best: string | null = null;
  let rank = 0;
  for (let at = buf.indexOf("lib", 0, "latin1"); at >= 0; at = buf.indexOf("lib", at + 3, "latin1")) {
    if (at === 0 || buf[at - 1] !== 0) continue;
    const end = buf.indexOf(0, at);
    if (end < 0 || end - at > 64) continue;
    const text = buf.toString("latin1", at, end);
    if (!LIB_VALUE.test(text)) continue;
    const r = text.includes("/") ? 3 : text === "lib" ? 1 : 2;
    if (r > rank) [best, rank] = [text, r];
    if (rank === 3) break;
  }
  return best;
}

/** The release in `--version`'s text (`ld.so (Debian GLIBC 2.41-12) stable release version 2.41.`). */
const VERSION_TEXT = /release version (\d+)\.(\d+)[.\0 ]/;
/** The file name of a loader of glibc < 2.34 (`ld-2.31.so`). */
const VERSION_NAME = /^ld-(\d+)\.(\d+)\.so$/;

/** A release from a regular expression match, or null. */
function release(m: RegExpExecArray | null): [number, number] | null {
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** A directory glibc can have as slibdir or libdir: `.../lib`, `lib32`, `lib64`, `libx32`, `lib/<triplet>`. */
const LIB_DIR = /^\/(?:[^\0/]+\/)*lib(?:32|64|x32)?\/(?:[a-z0-9_]+-[a-z0-9_]+(?:-[a-z0-9_]+)*\/)?$/;
const CACHE = /^\/(?:[^\0/]+\/)*ld\.so\.cache$/;
/** Longest path considered (SYSTEM_DIRS entries are short; this bounds the scan's strings). */
const MAX_PATH = 4096;

/**
 * The absolute path that ends at `nul` (the index of its NUL) and matches `pattern`: printable
 * ASCII, at most MAX_PATH bytes, starting at a `/`, with where it starts. The string usually
 * follows another string's NUL, but not always (ARM's loader has its directory list right after
 * code bytes), so each `/` of the printable run before `nul` is tried as the start, longest first.
 */
function pathEndingAt(buf: Buffer, nul: number, pattern: RegExp): { text: string; start: number } | null {
  const from = Math.max(0, nul - MAX_PATH);
  let first = nul;
  while (first > from && buf[first - 1]! >= 0x21 && buf[first - 1]! <= 0x7e) first--;
  for (let start = buf.indexOf(0x2f, first); start >= 0 && start < nul; start = buf.indexOf(0x2f, start + 1)) {
    const text = buf.toString("latin1", start, nul);
    if (pattern.test(text)) return { text, start };
  }
  return null;
}

/**
 * The default directories, cache path and release in a loader's bytes (see the module comment);
 * `fileName`, the loader's real file name, tells the release of a glibc < 2.33 loader.
 */
export function loaderBuildOf(bytes: Uint8Array, fileName = ""): LoaderBuild {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Every string ending in "/" (native searches: the loader is a few hundred KB).
  let systemDirs: string[] | null = null;
  let run: string[] = [];
  let runEnd = -1;
  for (let at = buf.indexOf("/\0", 0, "latin1"); at >= 0 && systemDirs === null; at = buf.indexOf("/\0", at + 1, "latin1")) {
    const s = pathEndingAt(buf, at + 1, LIB_DIR);
    if (s === null) continue;
    // A run is consecutive strings: each starts right after the previous one's NUL.
    if (run.length > 0 && s.start !== runEnd + 1) systemDirs = run;
    else {
      run.push(s.text.slice(0, -1));
      runEnd = at + 1;
    }
  }
  if (systemDirs === null && run.length > 0) systemDirs = run;
  let cachePath: string | null = null;
  const suffix = "/ld.so.cache\0";
  for (let at = buf.indexOf(suffix, 0, "latin1"); at >= 0 && cachePath === null; at = buf.indexOf(suffix, at + 1, "latin1")) {
    const s = pathEndingAt(buf, at + suffix.length - 1, CACHE);
    if (s !== null) cachePath = s.text;
  }
  let version: [number, number] | null = null;
  for (let at = buf.indexOf("release version ", 0, "latin1"); at >= 0 && version === null; at = buf.indexOf("release version ", at + 1, "latin1")) {
    version = release(VERSION_TEXT.exec(buf.toString("latin1", at, at + 32)));
  }
  version ??= release(VERSION_NAME.exec(fileName));
  // Only in a loader (a file with its directory list or cache path): libc.so.6 has such strings too.
  const lib = systemDirs !== null || cachePath !== null ? libValueOf(buf) : null;
  return { systemDirs, cachePath, version, lib };
}

const builds = new Map<string, LoaderBuild | null>();

/**
 * The build of the loader at `hostPath` (read once per thread; null when it cannot be read). The
 * path is noted as consulted: a result cache is not trusted after the loader changes.
 */
export function loaderBuild(hostPath: string): LoaderBuild | null {
  noteConsulted(hostPath);
  if (builds.has(hostPath)) return builds.get(hostPath)!;
  let build: LoaderBuild | null;
  try {
    build = loaderBuildOf(readFileSync(hostPath), basename(realpathSync(hostPath)));
  } catch {
    build = null;
  }
  builds.set(hostPath, build);
  return build;
}

/**
 * The build of the loader that runs this process (from `/proc/self/maps`): the host's glibc even
 * where nothing is at the FHS path `/lib64/ld-linux-x86-64.so.2` (NixOS without nix-ld, whose
 * programs name their store glibc's loader); null when not found.
 */
export function ownLoaderBuild(): LoaderBuild | null {
  let maps: string;
  try {
    maps = readFileSync("/proc/self/maps", "utf8");
  } catch {
    return null;
  }
  for (const line of maps.split("\n")) {
    const slash = line.indexOf("/");
    if (slash < 0) continue;
    const path = line.slice(slash);
    const base = path.slice(path.lastIndexOf("/") + 1);
    if (/^ld(-linux[^/]*)?\.so/.test(base)) return loaderBuild(path);
  }
  return null;
}
