/**
 * Aggregates the per-file reports of a `check` run into one plain summary record: libraries that
 * did not resolve (with counts and example files), missing symbol versions, which search
 * directories served how many libraries, run-path directories that served nothing, and the loaders
 * whose rules the answers assume.
 */
import type { LoaderInfo, RunPathUse } from "./resolver.js";
import type { FileReport, NeededRecord, Via } from "./types.js";

const EXAMPLES = 3;

function countServed(served: Map<string, ServedDir>, e: NeededRecord): void {
  if (e.dir === undefined || e.via === null) return;
  const key = `${e.via}\0${e.dir}`;
  const s = served.get(key) ?? { dir: e.dir, via: e.via, served: 0 };
  s.served++;
  served.set(key, s);
}

export interface Unresolved {
  name: string;
  /** Files whose load tree misses it. */
  count: number;
  examples: string[];
}

export interface VersionGapSummary {
  version: string;
  /** The library (path) that lacks it. */
  provider: string;
  count: number;
  examples: string[];
}

export interface ServedDir {
  dir: string;
  via: Via;
  /** DT_NEEDED edges (over all files) this directory satisfied. */
  served: number;
}

export interface CheckSummary {
  type: "summary";
  files: number;
  ok: number;
  unresolved: number;
  errors: number;
  notLoadable: number;
  missingLibraries: Unresolved[];
  versionGaps: VersionGapSummary[];
  searchDirs: ServedDir[];
  /** Run-path directories some search consulted that never provided a library. */
  unusedDirs: RunPathUse[];
  /** The loaders whose rules the answers assume (one per kind of file seen). */
  loaders: LoaderInfo[];
  elapsedMs: number;
}

function bump<T extends { count: number; examples: string[] }>(m: Map<string, T>, key: string, make: () => T, file: string): void {
  const entry = m.get(key) ?? make();
  if (!entry.examples.includes(file)) {
    entry.count++;
    if (entry.examples.length < EXAMPLES) entry.examples.push(file);
  }
  m.set(key, entry);
}

/**
 * @param context the `--exe` program's own tree: its edges count as served (its RUNPATH did serve
 *   libpython...), its problems are not counted
 */
export function summarize(reports: FileReport[], uses: RunPathUse[], elapsedMs: number, context: FileReport | null = null, loaders: LoaderInfo[] = []): CheckSummary {
  const missing = new Map<string, Unresolved>();
  const gaps = new Map<string, VersionGapSummary>();
  const served = new Map<string, ServedDir>();
  const count = (s: FileReport["status"]): number => reports.filter((r) => r.status === s).length;
  for (const r of reports) {
    for (const name of r.missing) bump(missing, name, () => ({ name, count: 0, examples: [] }), r.path);
    for (const e of r.needed) {
      for (const version of e.missingVersions) {
        const provider = e.path ?? e.name;
        bump(gaps, `${provider}\0${version}`, () => ({ version, provider, count: 0, examples: [] }), r.path);
      }
      countServed(served, e);
    }
  }
  for (const e of context?.needed ?? []) countServed(served, e);
  const byCount = <T extends { count: number }>(a: T, b: T): number => b.count - a.count;
  return {
    type: "summary",
    files: reports.length,
    ok: count("ok"),
    unresolved: count("unresolved"),
    errors: count("error"),
    notLoadable: count("not-loadable"),
    missingLibraries: [...missing.values()].sort(byCount),
    versionGaps: [...gaps.values()].sort(byCount),
    searchDirs: [...served.values()].sort((a, b) => b.served - a.served),
    unusedDirs: uses.filter((u) => !served.has(`${u.via}\0${u.dir}`)),
    loaders,
    elapsedMs: Math.round(elapsedMs),
  };
}
