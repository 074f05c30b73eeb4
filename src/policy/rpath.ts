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
 *      static resolver answers by the loader's rules (patchelf looks at direct NEEDED only and drops
 *      it: NixOS/patchelf#265).
 * The tag is `DT_RPATH` with `force`, else `DT_RUNPATH`.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { CoreEngine } from "../core/engine.js";
import type { EditRequest, ElfInfo, RunpathTag } from "../core/types.js";
import { Resolver } from "../resolve/resolver.js";
import type { FileReport } from "../resolve/types.js";
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
 * The files a batch edits (by `dev:ino` as scanned) and what it does to them: a transitive shrink
 * resolves each of them as the batch leaves it, so that a file's answer does not depend on whether
 * its dependencies were edited before or after it (by this thread or another). That makes one run
 * reach the fixed point the next run confirms, whatever the order.
 */
export interface BatchView {
  keys: ReadonlySet<string>;
  policy: RpathPolicy;
  req: EditRequest;
}

/** The view of a batch whose files (to be opened) have the `dev:ino` keys `keys`. */
export function batchView(keys: Iterable<string>, spec: { req: EditRequest; rpath?: RpathPolicy | undefined }): BatchView {
  return { keys: new Set(keys), policy: spec.rpath ?? {}, req: spec.req };
}

/**
 * Answers whether `path` is an ELF file of the given class and machine (cached per path), and
 * holds the resolvers a transitive shrink consults (their own core instance: the caller's is busy
 * planning the file being shrunk). With a batch view, a library of the batch is resolved with the
 * run path and NEEDED entries the batch gives it (decided here, recursively, once per file).
 */
export class LibraryProbe {
  private cache = new Map<string, string | null>();
  private engine: CoreEngine | null = null;
  /** One resolver per nesting level: deciding a dependency's run path resolves its tree too. */
  private readonly resolvers: Resolver[] = [];
  private depth = 0;
  /** Files whose planned view is being decided (a cycle sees the file as it is). */
  private readonly deciding = new Set<string>();
  private readonly planned = new Map<string, ElfInfo>();
  /**
   * Direct shrinks decided so far, by class and machine, entries and NEEDED names: files with the
   * same ones get the same answer (every path it looks at is an absolute entry's, and the
   * answers of `identity` are kept for the whole batch anyway).
   */
  readonly shrinks = new Map<string, string[]>();

  constructor(private readonly batch: BatchView | null = null) {}

  /** The resolver of the current nesting level. */
  resolver(): Resolver {
    let r = this.resolvers[this.depth];
    if (r === undefined) {
      this.engine ??= CoreEngine.create();
      const plannedInfo = this.batch ? (key: string, path: string, info: ElfInfo) => this.plannedInfo(key, path, info) : undefined;
      r = new Resolver(plannedInfo ? { plannedInfo } : {}, this.engine);
      this.resolvers[this.depth] = r;
    }
    return r;
  }

  /** Resolves `file` (whose key is `self`, if known) as if it had `runPaths`. */
  resolveAs(file: string, runPaths: { rpath: string | null; runpath: string | null }, self?: string): FileReport {
    if (self !== undefined) this.deciding.add(self);
    try {
      return this.resolver().resolve(file, runPaths);
    } finally {
      if (self !== undefined) this.deciding.delete(self);
    }
  }

  /** How the batch leaves the file `key` (at `path`, read as `info`); as read if not in the batch. */
  private plannedInfo(key: string, path: string, info: ElfInfo): ElfInfo {
    const batch = this.batch!;
    if (!batch.keys.has(key) || this.deciding.has(key)) return info;
    const known = this.planned.get(key);
    if (known) return known;
    this.deciding.add(key);
    this.depth++;
    let out: ElfInfo;
    try {
      out = { ...info, needed: plannedNeeded(info.needed, batch.req) };
      if (batch.req.noDefaultLib && !out.flags1.includes("NODEFLIB")) out.flags1 = [...out.flags1, "NODEFLIB"];
      if (batch.req.soname !== undefined) out.soname = batch.req.soname; // (matched against loaded objects)
      // The run path decided exactly as the batch decides it for the file itself (from the file as read).
      const runPathReq = hasRpathPolicy(batch.policy)
        ? runpathRequest(info, computeRunpath(info, path, batch.policy, this, key), batch.policy)
        : batch.req;
      out = withRunPath(out, runPathReq);
    } finally {
      this.depth--;
      this.deciding.delete(key);
    }
    this.planned.set(key, out);
    return out;
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
  return underTrimmed(entry, prefix.length > 1 ? prefix.replace(/\/+$/, "") : prefix);
}

/** underPrefix for a prefix without trailing slashes (`/` itself aside). */
function underTrimmed(entry: string, p: string): boolean {
  if (entry === p) return true;
  if (p === "/") return entry.startsWith("/");
  if (p === "$ORIGIN" || p === "${ORIGIN}") return isOriginRelative(entry) && /^(\$ORIGIN|\$\{ORIGIN\})(\/|$)/.test(entry);
  return entry.startsWith(p + "/");
}

/** `info` with the run path `req` leaves (removal first, then the set string under its tag). */
function withRunPath(info: ElfInfo, req: EditRequest): ElfInfo {
  const set = req.setRpath;
  if (set === undefined) return req.removeRpath ? { ...info, rpath: null, runpath: null } : info;
  if (set === "") return { ...info, rpath: null, runpath: null };
  return req.rpathTag === "rpath" ? { ...info, rpath: set, runpath: null } : { ...info, rpath: null, runpath: set };
}

/** The NEEDED list after the request's removals, replacements and additions (as the core does them). */
export function plannedNeeded(needed: string[], req: EditRequest): string[] {
  let out = needed;
  if (req.removeNeeded?.length) out = out.filter((n) => !req.removeNeeded!.includes(n));
  for (const [from, to] of req.replaceNeeded ?? []) out = out.map((n) => (n === from ? to : n));
  const added = (req.addNeeded ?? []).filter((n, i, all) => !out.includes(n) && all.indexOf(n) === i);
  return added.length ? [...added, ...out] : out;
}

/**
 * The final run path entries for `info` (read from `file`, whose `dev:ino` is `self` when known)
 * under `policy`.
 */
export function computeRunpath(info: ElfInfo, file: string, policy: RpathPolicy, probe: LibraryProbe, self?: string): string[] {
  const current = info.runpath ?? info.rpath;
  let entries: string[] = policy.remove ? [] : policy.set !== undefined ? split(policy.set) : split(current ?? "");
  for (const dir of policy.add ?? []) for (const d of split(dir)) if (!entries.includes(d)) entries.push(d);
  const prefixes = trimmedPrefixes(policy);
  if (prefixes.length) entries = entries.filter((e) => prefixes.some((p) => underTrimmed(e, p)));
  if (policy.shrink) {
    const key = `${info.class}:${info.machine.number}\0${entries.join("\0")}\0\0${info.needed.join("\0")}`;
    let direct = probe.shrinks.get(key);
    if (direct === undefined) {
      direct = shrink(entries, info, probe);
      probe.shrinks.set(key, direct);
    }
    entries = policy.force ? keepTransitive(entries, direct, info, file, probe, self) : direct;
  }
  return entries;
}

const trimmed = new WeakMap<RpathPolicy, string[]>();

/** The policy's allowed prefixes without trailing slashes (computed once per policy). */
function trimmedPrefixes(policy: RpathPolicy): string[] {
  let t = trimmed.get(policy);
  if (t === undefined) {
    t = (policy.allowedPrefixes ?? []).map((p) => (p.length > 1 ? p.replace(/\/+$/, "") : p));
    trimmed.set(policy, t);
  }
  return t;
}

const trimSlash = (d: string): string => (d.length > 1 ? d.replace(/\/+$/, "") : d);

/**
 * Adds back the absolute entries the direct shrink dropped that serve a library deeper in the
 * load tree through this file's DT_RPATH (resolving the file as if it had all the entries).
 */
function keepTransitive(all: string[], direct: string[], info: ElfInfo, file: string, probe: LibraryProbe, self?: string): string[] {
  const dropped = all.filter((e) => e.startsWith("/") && !direct.includes(e));
  // Nothing dropped, or no DT_NEEDED at all (then nothing is loaded through the run path either).
  if (dropped.length === 0 || info.needed.length === 0) return direct;
  const report = probe.resolveAs(file, { rpath: all.join(":"), runpath: null }, self);
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
