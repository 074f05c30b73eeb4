/**
 * The result cache: what an earlier run of the same options over the same PATHs learnt about files
 * that needed no change (or are not ELF, or have nothing dynamic to edit), so that a re-run on a
 * patched tree answers them from one `lstat` each instead of opening and parsing every file.
 *
 * An answer is reused only when all of this holds:
 * - the file's `lstat` signature (device, inode, size, mtime, ctime) is the one recorded; ctime
 *   changes with every write, truncate, chmod, rename or new hard link and cannot be set by
 *   programs, so an equal signature means the bytes are the ones that were read;
 * - the file had last changed more than `SETTLE_MS` before the run that recorded it started, so
 *   no write can share its timestamp tick after the read (file systems stamp times from a coarse
 *   clock; git calls the opposite case "racily clean");
 * - every path outside the file that the decisions consulted (directories listed and candidate
 *   libraries opened by `--shrink-rpath`, the loader cache) still has its recorded signature,
 *   and none of them changed during the recording run (a run that rewrote a library other files'
 *   decisions looked at records nothing: the next run does);
 * - the options, the elfpatch version and the core's Wasm bytes are the same (one cache file per
 *   options and PATHs).
 * Files that were patched are not recorded by the run that patched them; the next run confirms
 * them (that is the run that proves the tree is a fixed point) and records them.
 * Anything unreadable or malformed in the cache is ignored; it is written atomically, never in the
 * tree, and `--no-cache` turns it off.
 */
import { createHash } from "node:crypto";
import { lstatSync, mkdirSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeFileSync, type Stats } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Consulted } from "../shared/consulted.js";
import type { FileRecord } from "./process-file.js";

/**
 * Skipped files whose answer depends only on their own bytes: no dynamic section, or a file that
 * relocates itself (`selfRelocating` in process-file.ts, not imported here: a cached re-run loads
 * none of the patch code).
 */
const CACHED_SKIPS: ReadonlySet<string> = new Set(["no-dynamic", "static-pie", "loader"]);

/** How long before a run a file (or consulted path) must have last changed to be recorded. */
export const SETTLE_MS = 2000;
const FORMAT = 4;

/** A verdict's first character: the status of its record (read without parsing the JSON). */
const VERDICT_STATUS: Record<string, "unchanged" | "skipped"> = { u: "unchanged", s: "skipped" };

/** The recorded answer for one file: an unchanged/skipped record, or "not an ELF file". */
export type CachedVerdict = { kind: "record"; record: FileRecord } | { kind: "not-elf" };

interface EnvBody {
  /** Files whose bytes (or absence) decisions used: path -> signature. */
  files: Record<string, string>;
  /** Directories names were looked up in: their signature, and each name's entry ("-" = absent). */
  dirs: Record<string, [string, Record<string, string>]>;
  /** Paths made canonical, and the answer. */
  reals: Record<string, string | null>;
}

/** The first line of a cache file. */
export interface CacheHeader {
  format: number;
  key: string;
  env: EnvBody;
}

/**
 * A file's entry: its signature and its verdict: "" for not-ELF, else the record's status as one
 * character (`u` unchanged, `s` skipped) followed by its JSON, parsed only when the answer is given.
 */
export type CacheEntry = [sig: string, verdict: string];

/**
 * The cache file: the header as one line of JSON, then for every file its path, signature and
 * verdict (see CacheEntry), each followed by a NUL (which neither a path nor JSON text contains).
 * Splitting that is a fraction of the cost of parsing one big JSON document, and leaves the
 * records as text until they are needed: loading it is most of a cached re-run's work.
 */
export function encodeCache(header: CacheHeader, files: Iterable<[string, CacheEntry]>): string {
  const parts = [JSON.stringify(header), "\n"];
  for (const [path, [sig, verdict]] of files) parts.push(path, "\0", sig, "\0", verdict, "\0");
  return parts.join("");
}

/** The header and entries of a cache file; null when it is not one (of any format). */
export function decodeCache(text: string): { header: CacheHeader; files: Map<string, CacheEntry> } | null {
  const nl = text.indexOf("\n");
  if (nl < 0) return null;
  let header: unknown;
  try {
    header = JSON.parse(text.slice(0, nl));
  } catch {
    return null;
  }
  if (!isObject(header) || typeof header.format !== "number" || typeof header.key !== "string") return null;
  const env = header.env;
  if (!isObject(env) || !isObject(env.files) || !isObject(env.dirs) || !isObject(env.reals)) return null;
  const parts = text.slice(nl + 1).split("\0");
  // n triples, each NUL-terminated: 3n + 1 parts, the last one empty (a truncated file is not).
  if (parts.length % 3 !== 1 || parts[parts.length - 1] !== "") return null;
  const files = new Map<string, CacheEntry>();
  for (let i = 0; i + 2 < parts.length; i += 3) {
    if (parts[i] === "" || parts[i + 1] === "") return null;
    files.set(parts[i]!, [parts[i + 1]!, parts[i + 2]!]);
  }
  return { header: header as unknown as CacheHeader, files };
}

/** Everything the decisions of a run consulted, merged from every thread. */
export class ConsultedSet {
  readonly files = new Set<string>();
  readonly names = new Map<string, Map<string, boolean>>();
  readonly reals = new Map<string, string | null>();

  add(c: Consulted): void {
    for (const f of c.files) this.files.add(f);
    for (const [dir, list] of c.names) {
      let m = this.names.get(dir);
      if (m === undefined) this.names.set(dir, (m = new Map()));
      for (const [name, found] of list) m.set(name, found);
    }
    for (const [p, r] of c.reals) this.reals.set(p, r);
  }
}

/** An entry as a name lookup sees it: inode and whether it is a symlink, or "-" when absent. */
function entrySig(path: string): string {
  try {
    const st = lstatSync(path);
    return `${st.ino}:${st.isSymbolicLink() ? "l" : "e"}`;
  } catch {
    return "-";
  }
}

function realOf(path: string): string | null {
  try {
    return realpathSync(path);
  } catch {
    return null;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** A directory signature that never matches: the directory changed too recently to trust it. */
const UNSETTLED = "~";

/** Whether everything `env` recorded is still so. */
function envHolds(env: EnvBody): boolean {
  for (const [path, sig] of Object.entries(env.files)) if (envSig(path).sig !== sig) return false;
  for (const [dir, [dsig, names]] of Object.entries(env.dirs)) {
    if (dsig !== UNSETTLED && envSig(dir).sig === dsig) continue; // no entry added, removed or renamed
    for (const [name, sig] of Object.entries(names)) if (entrySig(join(dir, name)) !== sig) return false;
  }
  for (const [path, real] of Object.entries(env.reals)) if (realOf(path) !== real) return false;
  return true;
}

/** The signature of an `lstat` result. */
export function sigOf(st: Stats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

/** The signature of a consulted path: the entry itself and, for a symlink, what it leads to. */
export function envSig(path: string): { sig: string; changedMs: number } {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    return { sig: "-", changedMs: 0 };
  }
  let sig = sigOf(st);
  let changedMs = st.ctimeMs;
  if (st.isSymbolicLink()) {
    try {
      const t = statSync(path);
      sig += `>${sigOf(t)}`;
      changedMs = Math.max(changedMs, t.ctimeMs);
    } catch {
      sig += ">-";
    }
  }
  return { sig, changedMs };
}

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ELFPATCH_CACHE_DIR) return env.ELFPATCH_CACHE_DIR;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, "elfpatch");
  return join(homedir(), ".cache", "elfpatch");
}

export class ResultCache {
  private env: EnvBody = { files: {}, dirs: {}, reals: {} };
  private files = new Map<string, CacheEntry>();
  private readonly fresh = new Map<string, CacheEntry>();
  /** Answers given from the cache in this run. */
  hits = 0;

  /** How many files the cache has answers for (0: a first run over these PATHs). */
  get entries(): number {
    return this.files.size;
  }
  /** Answers found (not given) by this run. */
  private found = 0;

  private constructor(
    private readonly file: string,
    private readonly key: string,
    private readonly runStartMs: number,
  ) {}

  /**
   * Opens the cache for `key` (the options and versions) and `roots` (the real PATHs) in `dir`;
   * an earlier run's answers are kept only when every consulted path is as it recorded.
   */
  static open(dir: string, key: string, roots: string[], runStartMs = Date.now()): ResultCache {
    const name = createHash("sha256").update(`${key}\0${[...roots].sort().join("\0")}`).digest("hex").slice(0, 32);
    const c = new ResultCache(join(dir, `${name}.cache`), key, runStartMs);
    let text: string;
    try {
      text = readFileSync(c.file, "utf8");
    } catch {
      return c; // none yet, or unreadable: start empty
    }
    try {
      // A file of another format or the wrong shape (edited by hand, written by a bug) is as good
      // as none: any surprise in it means starting empty. (A record that is not one is a miss.)
      const body = decodeCache(text);
      if (body === null || body.header.format !== FORMAT || body.header.key !== key || !envHolds(body.header.env)) return c;
      c.env = body.header.env;
      c.files = body.files;
    } catch {
      // start empty
    }
    return c;
  }

  /**
   * The recorded answer for `path` if its signature (`sigOf` its `lstat`) is unchanged. With
   * `light`, an unchanged file's record carries its status only (no `before`/`after`: for a
   * caller that prints no unchanged record), and its JSON is not parsed.
   */
  lookup(path: string, sig: string, light = false): CachedVerdict | undefined {
    const e = this.files.get(path);
    if (e === undefined || e[0] !== sig) return undefined;
    let stored: Partial<FileRecord> | null = null;
    const status = e[1] === "" ? null : VERDICT_STATUS[e[1][0]!];
    if (status === undefined) return undefined;
    // A light answer trusts the status character; the rest must at least look like one object.
    const lightOk = light && status === "unchanged" && e[1].charCodeAt(1) === 123 && e[1].charCodeAt(e[1].length - 1) === 125;
    if (status !== null && !lightOk) {
      try {
        stored = JSON.parse(e[1].slice(1)) as Partial<FileRecord>;
      } catch {
        return undefined;
      }
      if (!isObject(stored) || stored.status !== status) return undefined;
    }
    this.hits++;
    this.fresh.set(path, e);
    if (status === null) return { kind: "not-elf" };
    if (stored === null) return { kind: "record", record: { type: "file", path, status, changed: false, strategy: null, bytesAdded: 0, edits: 0 } };
    // Stored without what every such record has (and without `after`, equal to `before` for an
    // unchanged file); rebuilt with the same keys in the same order as the run that found it.
    const record: FileRecord = { type: "file", path, status: stored.status!, changed: false, strategy: null, bytesAdded: 0, edits: 0, ...stored };
    if (record.status === "unchanged" && record.after === undefined) record.after = record.before;
    return { kind: "record", record };
  }

  /** Records an answer found in this run (ignored for files that changed too recently). */
  record(path: string, st: { sig: string; ctimeMs: number }, verdict: FileRecord | null): void {
    if (st.ctimeMs >= this.runStartMs - SETTLE_MS) return;
    if (verdict !== null) {
      if (!(verdict.status === "unchanged" || (verdict.status === "skipped" && CACHED_SKIPS.has(verdict.skipReason ?? "")))) return;
      if (verdict.changed || verdict.strategy !== null || verdict.bytesAdded !== 0 || verdict.edits !== 0) return;
      const {
        resolution: _r, journal: _j, beforeInfo: _b, afterInfo: _a, type: _t, path: _p, changed: _c, strategy: _s, bytesAdded: _n, edits: _e,
        after, ...plain
      } = verdict;
      verdict = (verdict.status === "unchanged" ? plain : { ...plain, ...(after ? { after } : {}) }) as FileRecord;
    }
    this.found++;
    this.fresh.set(path, [st.sig, verdict === null ? "" : `${verdict.status === "unchanged" ? "u" : "s"}${JSON.stringify(verdict)}`]);
  }

  /**
   * Writes what this run knows: the answers it gave or found, if every consulted path (from the
   * earlier run and this one) is settled. Returns whether it wrote.
   */
  save(consulted: ConsultedSet): boolean {
    const nothingNew = this.found === 0 && consulted.files.size === 0 && consulted.names.size === 0 && consulted.reals.size === 0;
    if (nothingNew && this.hits === this.files.size) return false; // every answer came from it: it is up to date
    const env = this.settledEnv(consulted);
    if (env === null) return false;
    const paths = [...this.fresh.keys()].sort();
    const text = encodeCache({ format: FORMAT, key: this.key, env }, paths.map((p) => [p, this.fresh.get(p)!]));
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      mkdirSync(join(this.file, ".."), { recursive: true });
      writeFileSync(tmp, text);
      renameSync(tmp, this.file);
      return true;
    } catch {
      try {
        unlinkSync(tmp);
      } catch {
        // never created
      }
      return false; // a cache that cannot be written is no error
    }
  }

  /**
   * The environment to record: the earlier run's (for the answers carried over) and this run's,
   * as it is now; null when any of it changed during (or just before) this run, or differs from
   * what a decision saw.
   */
  private settledEnv(c: ConsultedSet): EnvBody | null {
    const settled = this.runStartMs - SETTLE_MS;
    const env: EnvBody = { files: {}, dirs: {}, reals: {} };
    for (const p of [...new Set([...Object.keys(this.env.files), ...c.files])].sort()) {
      const { sig, changedMs } = envSig(p);
      const old = this.env.files[p];
      if (changedMs >= settled || (old !== undefined && old !== sig)) return null;
      env.files[p] = sig;
    }
    const dirs = new Map<string, Map<string, boolean | null>>();
    for (const [d, [, names]] of Object.entries(this.env.dirs)) dirs.set(d, new Map(Object.keys(names).map((n) => [n, null])));
    for (const [d, names] of c.names) {
      let m = dirs.get(d);
      if (m === undefined) dirs.set(d, (m = new Map()));
      for (const [n, found] of names) m.set(n, found);
    }
    for (const d of [...dirs.keys()].sort()) {
      const names: Record<string, string> = {};
      for (const [n, found] of [...dirs.get(d)!].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
        const sig = entrySig(join(d, n));
        const old = this.env.dirs[d]?.[1][n];
        if ((found !== null && found !== (sig !== "-")) || (old !== undefined && old !== sig)) return null;
        names[n] = sig;
      }
      // A directory that changed within the settle time gets no signature: a name added in the
      // same timestamp tick would leave it equal. Its names are then checked one by one.
      const { sig, changedMs } = envSig(d);
      env.dirs[d] = [changedMs >= settled ? UNSETTLED : sig, names];
    }
    const reals = new Map<string, string | null>([...Object.entries(this.env.reals), ...c.reals]);
    for (const p of [...reals.keys()].sort()) {
      const real = realOf(p);
      if (real !== reals.get(p)) return null;
      env.reals[p] = real;
    }
    return env;
  }
}

/** The options part of the cache key: what decides the answers, and the code that decides them. */
export function cacheKey(parts: unknown, version: string, wasm: Uint8Array): string {
  return createHash("sha256").update(JSON.stringify(parts)).update(`\0${version}\0`).update(wasm).digest("hex");
}
