/**
 * What decisions about a file looked at outside that file — candidate libraries opened by
 * `--shrink-rpath` (and the loader cache), and names looked up in directory listings — so the
 * result cache can re-check exactly those before it trusts an earlier run's answer. Per thread
 * and off unless a batch with a result cache turns it on; workers hand theirs back with each shard.
 */
let on = false;
const files = new Set<string>();
/** Path -> its canonical form (or null when it did not resolve). */
const reals = new Map<string, string | null>();
/** Directory (host path) -> name -> whether the listing had it. */
const names = new Map<string, Map<string, boolean>>();

export interface Consulted {
  files: string[];
  names: [string, [string, boolean][]][];
  reals: [string, string | null][];
}

export function trackConsulted(enable: boolean): void {
  on = enable;
}

/** A file whose bytes (or absence) a decision used. */
export function noteConsulted(path: string): void {
  if (on) files.add(path);
}

/** A path made canonical (symlinks resolved), and the answer. */
export function noteRealpath(path: string, real: string | null): void {
  if (on) reals.set(path, real);
}

/** A name looked up in the listing of `dir`, and whether it was there. */
export function noteLookup(dir: string, name: string, found: boolean): void {
  if (!on) return;
  let m = names.get(dir);
  if (m === undefined) names.set(dir, (m = new Map()));
  m.set(name, found);
}

/** What was noted since the last call (and forgets it). */
export function takeConsulted(): Consulted {
  const out: Consulted = { files: [...files], names: [...names].map(([d, m]) => [d, [...m]]), reals: [...reals] };
  files.clear();
  reals.clear();
  names.clear();
  return out;
}
