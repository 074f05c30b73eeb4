/**
 * Finds the ELF files of a batch: PATHs are files or directory trees; ELF files are recognised by
 * their first bytes (not their name or mode); a file reached twice (symlink, hard link) is handled
 * once (by device and inode). Symlinks are not followed out of the batch: a symlink whose target
 * lies inside one of the roots is a duplicate; one leading elsewhere is skipped (unless
 * `followSymlinks`). Directory listings are read once; telling ELF from the rest costs one small
 * read here, or nothing with `sniff: false` (the batch, which opens every file anyway); a file the
 * result cache knows costs nothing but its `lstat`.
 */
import { closeSync, lstatSync, openSync, readdirSync, readSync, realpathSync, statSync, type Stats } from "node:fs";
import { basename, join, relative, resolve, sep } from "node:path";
import { ErrorCode, toErrorRecord, type ErrorRecord } from "../errors.js";
import { STALE_TEMP, UNDO_SUFFIX } from "../batch/temp-names.js";
import { sigOf, type ResultCache } from "../batch/cache.js";
import type { FileRecord } from "../batch/process-file.js";

export interface ScanOptions {
  /** Globs a file must match (relative to its root, or its base name for patterns without `/`). */
  include?: string[];
  exclude?: string[];
  /** Follow symlinks to files and directories outside the batch. */
  followSymlinks?: boolean;
  /** Answers from an earlier run (files whose signature is unchanged are not opened). */
  cache?: ResultCache;
  /**
   * Records of unchanged files answered from the cache carry their status only (for a caller
   * that prints no unchanged record: the CLI without --json).
   */
  lightCached?: boolean;
  /**
   * false: regular files are not opened here; whoever opens them next tells ELF from the rest
   * (the batch does, saving an open and a read per file). Default true.
   */
  sniff?: boolean;
  /** Told the number of files to open found so far, each time one is added. */
  onFound?: (files: number) => void;
}

export interface ScannedFile {
  path: string;
  size: number;
  dev: number;
  ino: number;
  nlink: number;
  /** The `lstat` signature and change time seen by the scan (for the result cache). */
  sig: string;
  ctimeMs: number;
  /** Other hard links to the same inode found inside the batch: they get the new version too. */
  links?: string[];
}

export interface SkippedFile {
  path: string;
  reason: "not-elf" | "duplicate" | "symlink" | "symlink-outside" | "symlink-dangling" | "excluded" | "not-regular";
  /** For duplicates: the path that is handled instead. */
  of?: string;
  /** A PATH named on the command line (not found by a walk): a special file there gets a record. */
  named?: boolean;
}

export interface ScanResult {
  files: ScannedFile[];
  skipped: SkippedFile[];
  errors: { path: string; error: ErrorRecord }[];
  /** Undo journals left by an interrupted `--in-place` run (recovered before patching). */
  journals: string[];
  /** Temp files an interrupted run of ours left (removed before patching). */
  staleTemps: string[];
  /** Files answered from the result cache: their records. */
  cached: FileRecord[];
}


const ELF_MAGIC = 0x7f454c46;

/** Whether the file starts with `\x7fELF` (one 4-byte read). */
export function isElf(path: string | Buffer): boolean {
  const fd = openSync(path, "r");
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32BE(0) === ELF_MAGIC;
  } finally {
    closeSync(fd);
  }
}

/**
 * A file name that is not valid UTF-8, as text: its valid UTF-8 sequences, and `\xNN` for each
 * byte that is not part of one. (Node's string paths are UTF-8, so such a name cannot be opened
 * through a string: the walk reads it as bytes.)
 */
export function displayName(name: Buffer): string {
  let out = "";
  for (let i = 0; i < name.length; ) {
    const c = name[i]!;
    const n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n > 0 && i + n <= name.length) {
      const seq = name.subarray(i, i + n);
      const text = seq.toString("utf8");
      if (Buffer.from(text, "utf8").equals(seq)) {
        out += text;
        i += n;
        continue;
      }
    }
    out += `\\x${c.toString(16).padStart(2, "0")}`;
    i++;
  }
  return out;
}

/** A directory entry, by a name that reads back as the same bytes. */
interface Entry {
  name: string;
  isSymbolicLink(): boolean;
  isDirectory(): boolean;
}

/**
 * A directory's entries whose names are valid UTF-8, and the raw names of the others. A name
 * node could not decode shows U+FFFD: only then is the directory read again as bytes.
 */
function listDir(dir: string): { entries: Entry[]; undecodable: Buffer[] } {
  const entries: Entry[] = readdirSync(dir, { withFileTypes: true });
  if (!entries.some((e) => e.name.includes("\uFFFD"))) return { entries, undecodable: [] };
  const out: { entries: Entry[]; undecodable: Buffer[] } = { entries: [], undecodable: [] };
  for (const e of readdirSync(dir, { withFileTypes: true, encoding: "buffer" })) {
    const name = e.name.toString("utf8");
    if (Buffer.from(name, "utf8").equals(e.name)) out.entries.push({ name, isSymbolicLink: () => e.isSymbolicLink(), isDirectory: () => e.isDirectory() });
    else out.undecodable.push(e.name);
  }
  return out;
}

/** Patterns with a `/` match the path relative to the root; the others match the base name. */
function matcher(globs: string[] | undefined): ((rel: string) => boolean) | null {
  if (!globs?.length) return null;
  const withSlash = globs.filter((g) => g.includes("/"));
  const plain = globs.filter((g) => !g.includes("/"));
  // picomatch (CommonJS) is loaded only when there are globs.
  const picomatch = require("picomatch") as typeof import("picomatch");
  const byPath = withSlash.length ? picomatch(withSlash, { dot: true }) : null;
  const byName = plain.length ? picomatch(plain, { dot: true }) : null;
  return (rel) => (byPath !== null && byPath(rel)) || (byName !== null && byName(basename(rel)));
}

export function scan(paths: string[], opts: ScanOptions = {}): ScanResult {
  const res: ScanResult = { files: [], skipped: [], errors: [], journals: [], staleTemps: [], cached: [] };
  const cache = opts.cache;
  const sniff = opts.sniff;
  const roots = paths.map((p) => resolve(p));
  const realRoots = roots.map((r) => {
    try {
      return realpathSync(r);
    } catch {
      return r;
    }
  });
  const include = matcher(opts.include);
  const exclude = matcher(opts.exclude);
  const seen = new Map<string, ScannedFile>(); // dev:ino -> the file handled
  const visitedDirs = new Set<string>();
  /** Whether the globs leave out the file at `rel` (relative to its root). */
  const excluded = (rel: string): boolean => (include !== null && !include(rel)) || (exclude !== null && exclude(rel));
  const insideBatch = (real: string): boolean => realRoots.some((r) => real === r || real.startsWith(r + sep));

  const consider = (path: string, st: Stats, rel: string): void => {
    if (!st.isFile()) return void res.skipped.push({ path, reason: "not-regular" });
    const key = `${st.dev}:${st.ino}`;
    const first = seen.get(key);
    if (first !== undefined) {
      if (first.path === path) return; // the same path reached through two overlapping roots
      // Another hard link to a file already in the batch: patched once, relinked here afterwards.
      (first.links ??= []).push(path);
      return void res.skipped.push({ path, reason: "duplicate", of: first.path });
    }
    const sig = sigOf(st);
    const known = cache?.lookup(path, sig, opts.lightCached === true);
    const filtered = excluded(rel);
    let elf: boolean;
    try {
      // Deferred: a file that is not ELF comes back from the batch as skipped "not-elf".
      elf = known ? known.kind === "record" : st.size >= 4 && ((sniff === false && !filtered) || isElf(path));
    } catch (err) {
      return void res.errors.push({ path, error: toErrorRecord(err) });
    }
    if (!elf) {
      if (!known) cache?.record(path, { sig, ctimeMs: st.ctimeMs }, null);
      return void res.skipped.push({ path, reason: "not-elf" });
    }
    if (filtered) return void res.skipped.push({ path, reason: "excluded" });
    const file: ScannedFile = { path, size: st.size, dev: st.dev, ino: st.ino, nlink: st.nlink, sig, ctimeMs: st.ctimeMs };
    seen.set(key, file);
    if (known?.kind === "record") res.cached.push(known.record);
    else {
      const n = res.files.push(file);
      opts.onFound?.(n);
    }
  };

  /**
   * An entry whose name is not valid UTF-8 (`raw`: its path as bytes; `shown`: as text, see
   * displayName). Such a file cannot go through the batch, whose paths are strings: an ELF file
   * is a failed record that says why (IO_PATH_ENCODING); anything else is ignored as it would be
   * under any name (not ELF, symlinks, special files). A directory is walked as bytes, for the
   * ELF files below it.
   */
  const undecodableEntry = (raw: Buffer, shown: string, root: string): void => {
    try {
      const st = lstatSync(raw);
      if (st.isDirectory()) {
        const names = readdirSync(raw, { encoding: "buffer" }).sort(Buffer.compare);
        for (const n of names) undecodableEntry(Buffer.concat([raw, Buffer.from(sep), n]), shown + sep + displayName(n), root);
        return;
      }
      if (!st.isFile()) return;
      if (!(st.size >= 4 && isElf(raw))) return void res.skipped.push({ path: shown, reason: "not-elf" });
      if (excluded(relative(root, shown))) return void res.skipped.push({ path: shown, reason: "excluded" });
      const message = "The file name is not valid UTF-8, so elfpatch cannot open the file by name (rename it, or patch it through a link with a UTF-8 name)";
      res.errors.push({ path: shown, error: { code: ErrorCode.IO_PATH_ENCODING, message } });
    } catch (err) {
      res.errors.push({ path: shown, error: toErrorRecord(err) });
    }
  };

  /** `real`: the directory's canonical path when the caller knows it (a plain subdirectory of a known one). */
  const walkDir = (dir: string, root: string, knownReal?: string): void => {
    let real: string;
    try {
      real = knownReal ?? realpathSync(dir);
    } catch (err) {
      return void res.errors.push({ path: dir, error: toErrorRecord(err) });
    }
    if (visitedDirs.has(real)) return;
    visitedDirs.add(real);
    let entries: Entry[];
    let undecodable: Buffer[];
    try {
      ({ entries, undecodable } = listDir(dir));
    } catch (err) {
      return void res.errors.push({ path: dir, error: toErrorRecord(err) });
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    // `dir` is absolute and normalised and a name has no `/`: plain concatenation is the join.
    const prefix = dir.endsWith(sep) ? dir : dir + sep;
    for (const name of undecodable) undecodableEntry(Buffer.concat([Buffer.from(prefix), name]), prefix + displayName(name), root);
    for (const e of entries) {
      const path = prefix + e.name;
      const rel = include || exclude ? relative(root, path) : "";
      if (e.name.includes(".elfpatch-")) {
        if (e.name.endsWith(UNDO_SUFFIX)) {
          res.journals.push(path);
          continue;
        }
        if (STALE_TEMP.test(e.name)) {
          res.staleTemps.push(path);
          continue;
        }
      }
      try {
        if (e.isSymbolicLink()) {
          // A symlink is never replaced by a file: its target is what gets patched.
          let target: string;
          try {
            target = realpathSync(path);
          } catch {
            res.skipped.push({ path, reason: "symlink-dangling" });
            continue;
          }
          const st = statSync(target);
          if (insideBatch(target)) {
            // The target is walked as part of the batch anyway (a special file is not patched).
            if (st.isFile()) res.skipped.push({ path, reason: "symlink", of: target });
            continue;
          }
          if (!opts.followSymlinks) {
            res.skipped.push({ path, reason: "symlink-outside" });
            continue;
          }
          if (st.isDirectory()) walkDir(target, target);
          else consider(target, st, rel);
        } else if (e.isDirectory()) {
          walkDir(path, root, join(real, e.name)); // not a symlink: its real path follows from ours
        } else {
          consider(path, lstatSync(path), rel);
        }
      } catch (err) {
        res.errors.push({ path, error: toErrorRecord(err) });
      }
    }
  };

  for (let i = 0; i < roots.length; i++) {
    const root = roots[i]!;
    try {
      // A root named explicitly is followed even if it is a symlink; its target is patched.
      const real = realRoots[i]!;
      const st = statSync(real);
      if (st.isDirectory()) walkDir(root, root);
      else if (!st.isFile()) res.skipped.push({ path: real, reason: "not-regular", named: true });
      else consider(real, st, relative(resolve(root, ".."), root));
    } catch (err) {
      res.errors.push({ path: paths[i]!, error: toErrorRecord(err) });
    }
  }
  // Files are handled in a stable order whatever the walk found first.
  res.files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return res;
}

