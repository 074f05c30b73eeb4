/**
 * Dynamic string tokens and path lists (loader.md §4, §5).
 *
 * Tokens: `$ORIGIN`, `$LIB`, `$PLATFORM`, also written `${...}`. Unbraced, the name must not be
 * followed by `[A-Za-z0-9_]` (`$ORIGINX` stays literal); an unknown `$X` stays literal; a known token
 * without a value (unknown origin, no platform) discards the whole string being expanded.
 *
 * Path lists: `DT_RPATH`/`DT_RUNPATH` split on `:`, `LD_LIBRARY_PATH` on `:` and `;`. An empty
 * element is the current directory (""), an element that expands to nothing is dropped, trailing
 * slashes go (except for `/`), and a directory appears once per list.
 */

export interface DstValues {
  /** `$ORIGIN` of the object the string belongs to; null when unknown. */
  origin: string | null;
  /** `$LIB`, a build-time constant of the target loader. */
  lib: string;
  /** `$PLATFORM`; null when the target has none. */
  platform: string | null;
}

const TOKENS = ["ORIGIN", "PLATFORM", "LIB"] as const;
type Token = (typeof TOKENS)[number];

const isIdent = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_]/.test(c);

/** Length of `$NAME`/`${NAME}` after the `$` at `at` (0 when it is not that token). */
function tokenLength(s: string, at: number, name: Token): number {
  const curly = s[at] === "{";
  const start = curly ? at + 1 : at;
  if (!s.startsWith(name, start)) return 0;
  const next = s[start + name.length];
  if (curly) return next === "}" ? name.length + 2 : 0;
  return isIdent(next) ? 0 : name.length;
}

function value(name: Token, v: DstValues): string | null {
  if (name === "ORIGIN") return v.origin;
  if (name === "PLATFORM") return v.platform;
  return v.lib;
}

/** Expands every token in `s`; null when a known token has no value (the string is dropped). */
export function expandTokens(s: string, v: DstValues): string | null {
  if (!s.includes("$")) return s;
  let out = "";
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c !== "$") {
      out += c;
      i++;
      continue;
    }
    let matched = false;
    for (const t of TOKENS) {
      const len = tokenLength(s, i + 1, t);
      if (len === 0) continue;
      const repl = value(t, v);
      if (repl === null) return null;
      out += repl;
      i += 1 + len;
      matched = true;
      break;
    }
    if (!matched) {
      out += "$";
      i++;
    }
  }
  return out;
}

/** Strips trailing slashes, keeping `/` itself. */
function trimSlashes(d: string): string {
  let end = d.length;
  while (end > 1 && d[end - 1] === "/") end--;
  return d.slice(0, end);
}

/** A `DT_RPATH`/`DT_RUNPATH` string as directories; null when it yields none (counts as absent). */
export function runPathDirs(list: string, v: DstValues): string[] | null {
  if (list === "") return null;
  return dedupe(list.split(":"), v);
}

/**
 * `LD_LIBRARY_PATH` as directories, with the main program's token values. The loader expands tokens
 * over the whole string before splitting it (and then each element again), so a token without a
 * value empties the whole variable, which then means the CWD.
 */
export function libraryPathDirs(list: string | null, v: DstValues): string[] | null {
  if (list === null || list === "") return null;
  const expanded = expandTokens(list, v) ?? "";
  return dedupe(expanded.split(/[:;]/), v);
}

function dedupe(elements: string[], v: DstValues): string[] | null {
  const out: string[] = [];
  for (const e of elements) {
    let dir = "";
    if (e !== "") {
      const x = expandTokens(e, v);
      if (x === null || x === "") continue;
      dir = trimSlashes(x);
    }
    if (!out.includes(dir)) out.push(dir);
  }
  return out.length > 0 ? out : null;
}

/** `dir/rest` as the loader builds it: "" is the CWD (a bare relative name), `/` has no extra slash. */
export function joinDir(dir: string, rest: string): string {
  if (dir === "") return rest;
  return dir.endsWith("/") ? dir + rest : `${dir}/${rest}`;
}

/** The directory part of a path the loader opened (its `$ORIGIN` before the CWD prefix). */
export function dirnameOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return "";
  return slash === 0 ? "/" : path.slice(0, slash);
}
