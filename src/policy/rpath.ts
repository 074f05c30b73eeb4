/**
 * The run-path policy, in the host: turns `--remove-rpath`, `--set-rpath`, `--add-rpath`,
 * `--shrink-rpath`, `--allowed-rpath-prefixes` and `--force-rpath` into the one final run path the
 * core writes. Steps, always in this order (so `--add-rpath X --shrink-rpath` adds, then shrinks,
 * unlike patchelf which drops the add):
 *   1. start from the current run path (`DT_RUNPATH` if present, else `DT_RPATH`), or nothing
 *      with `remove`, or `set`;
 *   2. `add`: append each directory not already present;
 *   3. `allowedPrefixes`: keep only entries under one of the prefixes (whole path components;
 *      `$ORIGIN` and `${ORIGIN}` are prefixes like any other);
 *   4. `shrink`: keep entries that are not absolute (`$ORIGIN/...`, as patchelf does), and
 *      absolute directories that provide a `DT_NEEDED` library no earlier entry provides (an ELF
 *      file of the same class and machine); drop duplicates and empty entries.
 *      With `force` (DT_RPATH, which the libraries this file loads inherit), a directory is also
 *      kept when it serves a dependency of a dependency through this file's run path, as the
 *      static resolver answers by glibc's rules (patchelf looks at direct NEEDED only and drops
 *      it: NixOS/patchelf#265).
 * The tag is `DT_RPATH` with `force`, else `DT_RUNPATH`.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { CoreEngine } from "../core/engine.js";
import type { EditRequest, ElfInfo, RunpathTag } from "../core/types.js";
import { Resolver } from "../resolve/resolver.js";
import { noteConsulted } from "../shared/consulted.js";

export interface RpathPolicy {
  remove?: boolean;
  set?: string;
  add?: string[];
  shrink?: boolean;
  allowedPrefixes?: string[];
  force?: boolean;
}

export function hasRpathPolicy(p: RpathPolicy): boolean {
  return !!(p.remove || p.set !== undefined || p.add?.length || p.shrink || p.allowedPrefixes?.length);
}

/**
 * Answers whether `path` is an ELF file of the given class and machine (cached per path), and
 * holds the resolver a transitive shrink consults (its own core instance: the caller's is busy
 * planning the file being shrunk).
 */
export class LibraryProbe {
  private cache = new Map<string, string | null>();
  private res: Resolver | null = null;

  resolver(): Resolver {
    return (this.res ??= new Resolver({}, CoreEngine.create()));
  }

  /** `"<class>:<machine>"` of the ELF file at `path`, or null when it is not one (or unreadable). */
  identity(path: string): string | null {
    let id = this.cache.get(path);
    if (id !== undefined) return id;
    id = null;
    noteConsulted(path);
    let fd = -1;
    try {
      fd = openSync(path, "r");
      const b = Buffer.alloc(20);
      if (readSync(fd, b, 0, 20, 0) === 20 && b.readUInt32BE(0) === 0x7f454c46) {
        const machine = b[5] === 2 ? b.readUInt16BE(18) : b.readUInt16LE(18);
        id = `${b[4] === 2 ? 64 : 32}:${machine}`;
      }
    } catch {
      id = null; // missing, a directory, unreadable: not a candidate (ld.so skips these too)
    } finally {
      if (fd >= 0) closeSync(fd);
    }
    this.cache.set(path, id);
    return id;
  }
}

const isOriginRelative = (e: string): boolean => e.startsWith("$ORIGIN") || e.startsWith("${ORIGIN}");

/** Whether `entry` is `prefix` or below it, comparing whole path components. */
export function underPrefix(entry: string, prefix: string): boolean {
  const p = prefix.length > 1 ? prefix.replace(/\/+$/, "") : prefix;
  if (entry === p) return true;
  if (p === "/") return entry.startsWith("/");
  if (p === "$ORIGIN" || p === "${ORIGIN}") return isOriginRelative(entry) && /^(\$ORIGIN|\$\{ORIGIN\})(\/|$)/.test(entry);
  return entry.startsWith(p + "/");
}

/** The final run path entries for `info` (read from `file`) under `policy`. */
export function computeRunpath(info: ElfInfo, file: string, policy: RpathPolicy, probe: LibraryProbe): string[] {
  const current = info.runpath ?? info.rpath;
  let entries: string[] = policy.remove ? [] : policy.set !== undefined ? split(policy.set) : split(current ?? "");
  for (const dir of policy.add ?? []) for (const d of split(dir)) if (!entries.includes(d)) entries.push(d);
  const prefixes = policy.allowedPrefixes ?? [];
  if (prefixes.length) entries = entries.filter((e) => prefixes.some((p) => underPrefix(e, p)));
  if (policy.shrink) {
    const direct = shrink(entries, info, probe);
    entries = policy.force ? keepTransitive(entries, direct, info, file, probe) : direct;
  }
  return entries;
}

const trimSlash = (d: string): string => (d.length > 1 ? d.replace(/\/+$/, "") : d);

/**
 * Adds back the absolute entries the direct shrink dropped that serve a library deeper in the
 * load tree through this file's DT_RPATH (resolving the file as if it had all the entries).
 */
function keepTransitive(all: string[], direct: string[], info: ElfInfo, file: string, probe: LibraryProbe): string[] {
  const dropped = all.filter((e) => e.startsWith("/") && !direct.includes(e));
  // Nothing dropped, or no DT_NEEDED at all (then nothing is loaded through the run path either).
  if (dropped.length === 0 || info.needed.length === 0) return direct;
  const report = probe.resolver().resolve(file, { rpath: all.join(":"), runpath: null });
  const served = new Set(
    report.needed.filter((n) => n.via === "rpath" && n.from === file && n.dir).map((n) => trimSlash(n.dir!)),
  );
  const keep = new Set(direct);
  for (const e of dropped) if (served.has(trimSlash(e))) keep.add(e);
  return all.filter((e, i) => keep.has(e) && all.indexOf(e) === i);
}

function split(s: string): string[] {
  return s === "" ? [] : s.split(":");
}

function shrink(entries: string[], info: ElfInfo, probe: LibraryProbe): string[] {
  const want = `${info.class}:${info.machine.number}`;
  const found = new Set<string>();
  const kept: string[] = [];
  for (const e of entries) {
    if (e === "" || kept.includes(e)) continue;
    if (!e.startsWith("/")) {
      kept.push(e); // $ORIGIN-relative and relative entries are kept, as patchelf does
      continue;
    }
    // The path the loader tries: directory, "/", name (no normalisation; the kernel resolves it).
    const provides = info.needed.filter((n) => !found.has(n) && !n.includes("/") && probe.identity(`${e}/${n}`) === want);
    if (provides.length) {
      provides.forEach((n) => found.add(n));
      kept.push(e);
    }
  }
  return kept;
}

/** The edit request that makes the file's run path `entries` with the policy's tag. */
export function runpathRequest(info: ElfInfo, entries: string[], policy: RpathPolicy): EditRequest {
  const tag: RunpathTag = policy.force ? "rpath" : "runpath";
  if (entries.length === 0) {
    // An empty run path is written as no run path (glibc treats an empty string as absent).
    return info.rpath !== null || info.runpath !== null ? { removeRpath: true } : {};
  }
  return { setRpath: entries.join(":"), rpathTag: tag };
}
