/**
 * The static resolver: for one ELF file, the load tree glibc's `ld.so` would build and where each
 * DT_NEEDED resolves (loader.md §1-§5, §7, §8, §10, §11, §13). Nothing is executed.
 *
 * - Objects are loaded breadth-first, each object's DT_NEEDED in order; the first object that needs
 *   a library becomes its `l_loader`, whose chain decides which DT_RPATHs apply.
 * - A name already in the process (path, requested name, SONAME; the loader under its `PT_INTERP`
 *   path and SONAME; the vDSO) is not searched; a newly found file that is the same inode as a
 *   loaded object is that object.
 * - A name with `/` is opened as written (relative = relative to the CWD); a bare name is searched
 *   (`search-path.ts`).
 * - After the tree: symbol versions (`versions.ts`).
 * Unlike the real loader, which stops at the first missing library, every edge is resolved (as in
 * `ld.so --list`, where a later request for a missing name searches again).
 *
 * Contexts (`LoadMode`): each file is `dlopen`ed by the `exe` program (default; a program, which
 * `dlopen` refuses, is resolved as its own main program instead), or is itself the main program
 * (`exec`, or `list` for `ld.so --list` semantics). Caches (directory listings,
 * candidate checks, parsed files, the exe's load set) live as long as the Resolver.
 */
import { CoreEngine } from "../core/engine.js";
import { Candidates, headerTarget, hostTarget, otherTarget, sameTarget, targetKey, X86_64, type LibFile, type Probe, type Target } from "./candidates.js";
import { dirnameOf, expandTokens, libraryPathDirs } from "./expand.js";
import { FsView } from "./fs-view.js";
import { readLdCache } from "./ld-so-cache.js";
import { LoadSet, type LoadedObject } from "./load-set.js";
import { DEFAULT_INTERPRETER, defaultInterpreter, LOADER_SONAME, profileFor, VDSO_NAME, type Profile } from "./profile.js";
import { loaderBuild, ownLoaderBuild, type LoaderBuild } from "./loader-build.js";
import { isMuslReserved, muslArch, muslInterpreter, muslPathList, muslSystemPath, searchMusl, type MuslEnv } from "./musl.js";
import { searchName, type SearchEnv, type SearchResult } from "./search-path.js";
import type { FileReport, LoadMode, NeededRecord, ResolverOptions, SearchedDir } from "./types.js";
import { checkVersions, versionMessage } from "./versions.js";

export type { FileReport, LoadMode, NeededRecord, ResolverOptions, Via } from "./types.js";

/** A run-path directory that some search consulted, with the objects whose lists named it. */
export interface RunPathUse {
  dir: string;
  via: "rpath" | "runpath" | "ld_library_path";
  owners: string[];
}

/** Run paths to assume for the root instead of its own (raw strings, or null for none). */
export interface RunPathOverride {
  rpath: string | null;
  runpath: string | null;
}

/** One load tree under construction. */
interface Tree {
  set: LoadSet;
  /** The tree's loader is musl's (its rules, musl.ts), else glibc's. */
  musl: MuslEnv | null;
  /** musl: objects by the name a search found them by (its only name lookup for bare names). */
  shortnames: Map<string, LoadedObject>;
  queue: LoadedObject[];
  edges: NeededRecord[];
  byEdge: Map<string, NeededRecord>;
  errors: string[];
}

const MAX_OWNERS = 3;
const NO_FILE = "cannot open shared object file: No such file or directory";
/** The same message when no candidate was opened at all (errno is 0, e.g. under DF_1_NODEFLIB). */
const NO_FILE_UNTRIED = "cannot open shared object file";

/** A program rather than a library: `dlopen` refuses it, so it is resolved as a main program. */
function isProgram(file: LibFile): boolean {
  return file.info !== null && (file.info.type === "EXEC" || file.info.flags1.includes("PIE"));
}

function probeError(p: Probe, target: Target): string {
  if (p.kind === "other-class") return `wrong ELF class: ELFCLASS${target.elfClass === 2 ? 32 : 64}`;
  if (p.kind === "fatal") return p.message;
  return NO_FILE;
}

/** A loader whose rules the answers assume (`check --json` summary, `loaders`). */
export interface LoaderInfo {
  /** Its path in the target's view (the `PT_INTERP` of the target's programs). */
  path: string;
  rules: "glibc" | "musl";
  /** The files it loads: ELF class, byte order, `e_machine`. */
  class: 32 | 64;
  endian: "little" | "big";
  machine: number;
  /** glibc's release ("2.41"), read from the loader; null for musl or when the loader does not tell. */
  glibc: string | null;
  /** Its default directories (musl: the system path). */
  defaultDirs: string[];
  /** What `$LIB` expands to (null for musl, which has no such token). */
  lib: string | null;
  /** The cache file it reads (null: none). */
  cache: string | null;
  /** Files resolved with it. */
  files: number;
}

export class Resolver {
  readonly profile: Profile;
  /** What the target's glibc loader was built with (its directories, cache, release); null: not read (musl, or options gave them). */
  readonly loaderBuild: LoaderBuild | null;
  /** The kind of loader modelled (files of another kind, without `exe`, go to `others`). */
  readonly target: Target;
  /** Resolvers of the other kinds of files met (an i386 library in an x86-64 tree...), by target. */
  private readonly others = new Map<string, Resolver>();
  /** Files resolved by this resolver's own loader (not those handed to another target's). */
  private resolved = 0;
  private readonly cachePath: string | null;
  private readonly mode: LoadMode;
  private readonly fs: FsView;
  private readonly candidates: Candidates;
  private readonly env: SearchEnv;
  /** Shared with the resolvers of other targets (`forTarget`): one account for the whole tree. */
  private uses = new Map<string, RunPathUse>();
  private readonly muslEnvs = new Map<string, MuslEnv>();
  private readonly engine: CoreEngine;
  /** dlopen mode: the tree every root starts from (the exe's, or the loader alone). */
  private context: Tree | null = null;
  /** dlopen mode with `exe`: the program's own load tree (known after the first `resolve`). */
  exeReport: FileReport | null = null;

  constructor(
    private readonly opts: ResolverOptions = {},
    engine: CoreEngine = CoreEngine.create(),
  ) {
    this.mode = opts.mode ?? "dlopen";
    const root = (opts.root ?? "").replace(/\/+$/, "");
    this.fs = new FsView(root, opts.cwd ?? (root ? "/" : process.cwd()));
    this.engine = engine;
    this.target = opts.target ?? (opts.exe ? headerTarget(this.fs, opts.exe) : null) ?? hostTarget();
    this.candidates = new Candidates(this.fs, engine, opts.plannedInfo, this.target);
    const fhsLoader = defaultInterpreter(this.target) ?? DEFAULT_INTERPRETER;
    // The default directories and cache are the target loader's, as it was built (read from its
    // bytes): `interpreter`, else the loader the `exe` program names (a nixpkgs Python names its
    // store glibc's), else the FHS path; on the host with nothing there, the one running us.
    // A tree whose only loader is musl's (an Alpine root) is resolved by musl's rules (musl.ts).
    let build: LoaderBuild | null = null;
    let loader = opts.interpreter;
    if (loader === undefined && opts.exe) {
      const p = this.candidates.probe(opts.exe);
      if (p.kind === "ok" && p.file.info?.interpreter) loader = p.file.info.interpreter;
    }
    const present = (path: string): boolean => this.candidates.probe(path).kind !== "absent";
    // A tree with musl's loader for the target and no glibc loader (an Alpine root of any
    // architecture) is resolved by musl's rules.
    const musl = muslInterpreter(this.target);
    if (loader === undefined && musl !== null && !present(fhsLoader) && present(musl)) loader = musl;
    if ((opts.defaultDirs === undefined || opts.cachePath === undefined) && (loader === undefined || muslArch(loader) === null)) {
      build = loaderBuild(this.fs.host(loader ?? fhsLoader));
      if (build === null && root === "" && loader === undefined && sameTarget(this.target, hostTarget())) build = ownLoaderBuild();
    }
    this.loaderBuild = build;
    this.profile = profileFor({ ...opts, interpreter: loader ?? opts.interpreter }, build, this.target);
    const profile = this.profile;
    const cachePath = opts.cachePath === undefined ? build?.cachePath ?? "/etc/ld.so.cache" : opts.cachePath;
    this.cachePath = cachePath;
    this.env = {
      candidates: this.candidates,
      // CPU-dependent, so computed when first read (see SearchEnv.hwcapsComponents).
      get subdirs() {
        return profile.subdirs;
      },
      hwcapsComponents: this.profile.hwcapsComponents,
      libraryPath: null,
      defaultDirs: this.profile.defaultDirs,
      cache: cachePath === null ? null : readLdCache(this.fs.host(cachePath)),
      cacheOptions: this.profile.cacheOptions,
      dst: {
        lib: this.profile.lib,
        get platform() {
          return profile.platform;
        },
      },
      onRunPath: (owner, via, dirs) => this.noteRunPath(owner.path, via, dirs),
    };
  }

  /** What is wrong with the `exe` program's own load tree (empty when it loads). */
  get contextErrors(): string[] {
    const r = this.exeReport;
    return r ? [...r.needed.filter((e) => e.status === "missing").map((e) => e.error ?? e.name), ...r.errors] : [];
  }

  /** I/O so far: candidate files opened and directories listed (each at most once). */
  stats(): { filesOpened: number; dirsListed: number } {
    let filesOpened = this.candidates.opened;
    let dirsListed = this.fs.listed;
    for (const other of this.others.values()) {
      const s = other.stats();
      filesOpened += s.filesOpened;
      dirsListed += s.dirsListed;
    }
    return { filesOpened, dirsListed };
  }

  /**
   * The loaders whose rules resolved files so far, this resolver's first, then those of other
   * targets: what the report's answers assume (path, rules, glibc release, directories, `$LIB`).
   */
  loaders(): LoaderInfo[] {
    const out: LoaderInfo[] = [];
    if (this.resolved > 0) {
      const p = this.profile;
      const musl = muslArch(p.interpreter) !== null;
      const v = this.loaderBuild?.version;
      out.push({
        path: p.interpreter,
        rules: musl ? "musl" : "glibc",
        class: this.target.elfClass === 2 ? 64 : 32,
        endian: this.target.data === 1 ? "little" : "big",
        machine: this.target.machine,
        glibc: musl || !v ? null : `${v[0]}.${v[1]}`,
        defaultDirs: musl ? this.muslEnv(p.interpreter)!.systemPath ?? [] : p.defaultDirs,
        lib: musl ? null : p.lib,
        cache: musl ? null : this.cachePath,
        files: this.resolved,
      });
    }
    for (const other of this.others.values()) out.push(...other.loaders());
    return out;
  }

  /** Run-path directories consulted so far (RPATH, RUNPATH, LD_LIBRARY_PATH), by every target's loader. */
  runPathUses(): RunPathUse[] {
    return [...this.uses.values()];
  }

  /** The load tree of `path` (a host path; under `root` it must lie inside the root). */
  resolve(path: string, runPaths?: RunPathOverride): FileReport {
    const virtualPath = this.fs.virtualOf(path);
    if (virtualPath === null) return this.unloadable(path, "The file is outside the root directory");
    // A file of another class or machine (an i386 library in an x86-64 tree, an aarch64 sysroot)
    // is loaded by a loader of its own kind: resolved by a resolver for that target. With `exe`,
    // the program's loader is the only one, and it refuses the file (as dlopen does).
    // (The probe is the one `startTree` uses; a refused file's own target comes with it.)
    if (!this.opts.exe && !this.opts.target) {
      const t = otherTarget(this.candidates.probe(virtualPath));
      if (t && !sameTarget(t, this.target)) return this.forTarget(t).resolve(path, runPaths);
    }
    this.resolved++;
    const start = this.startTree(virtualPath, runPaths);
    if ("type" in start) return start;
    this.walk(start);
    return this.report(virtualPath, start);
  }

  private forTarget(t: Target): Resolver {
    const key = targetKey(t);
    let r = this.others.get(key);
    if (!r) {
      // The options that describe this resolver's loader (its path, directories, hwcaps, tokens)
      // are not the other loader's; the rest (root, cwd, LD_LIBRARY_PATH, cache file, planned
      // files) describe the process and the tree.
      const { interpreter: _i, defaultDirs: _d, hwcapsSubdirs: _h, lib: _l, platform: _p, ...shared } = this.opts;
      r = new Resolver({ ...shared, target: t }, this.engine);
      r.uses = this.uses;
      this.others.set(key, r);
    }
    return r;
  }

  private unloadable(path: string, message: string): FileReport {
    return { type: "file", path, status: "not-loadable", needed: [], missing: [], errors: [message], warnings: [] };
  }

  private dst(origin: string | null) {
    const profile = this.profile;
    // `$PLATFORM` is CPU-dependent: read only when a string has it.
    return {
      origin,
      lib: profile.lib,
      get platform() {
        return profile.platform;
      },
    };
  }

  private object(path: string, file: LibFile | null, loader: LoadedObject | null, origin: string | null): LoadedObject {
    return { path, file, info: file?.info ?? null, origin, loader, preloaded: false };
  }

  /** The loader itself and the vDSO, as every process has them. */
  private baseSet(interpreter: string | null): LoadSet {
    const set = new LoadSet();
    const interp = interpreter ?? this.profile.interpreter;
    const p = this.candidates.probe(interp);
    const rtld = this.object(interp, p.kind === "ok" ? p.file : null, null, dirnameOf(interp));
    rtld.preloaded = true;
    // glibc's loader answers to its SONAME; musl's to its path and the reserved names (musl.ts).
    set.add(rtld, [], muslArch(interp) !== null ? null : rtld.info?.soname ?? LOADER_SONAME);
    const vdso = this.object(VDSO_NAME, null, null, null);
    vdso.preloaded = true;
    set.add(vdso, []);
    return set;
  }

  /**
   * The root object in its load set, or the report of a root the loader cannot load. With
   * `runPaths`, the root is resolved as if it had those run paths (what-if for a planned edit).
   */
  private startTree(path: string, runPaths?: RunPathOverride): Tree | FileReport {
    const p = this.candidates.probe(path);
    if (p.kind !== "ok") return this.unloadable(path, `${path}: ${probeError(p, this.target)}`);
    if (this.mode !== "dlopen" || isProgram(p.file)) {
      const tree = this.programTree(path, p.file, this.mode === "list");
      if (runPaths && tree.set.main?.info) tree.set.main.info = { ...tree.set.main.info, ...runPaths };
      return tree;
    }
    const context = this.contextTree();
    const set = context.set.clone();
    const known = set.lookup(path) ?? set.sameFile(p.file);
    const root = known ?? this.object(path, p.file, null, this.fs.absolute(dirnameOf(path)));
    if (runPaths && !known && root.info) root.info = { ...root.info, ...runPaths };
    if (!known) set.add(root, [path]);
    this.setLibraryPath(set.main);
    const shortnames = new Map(context.shortnames);
    return { set, musl: context.musl, shortnames, queue: [root], edges: [], byEdge: new Map(), errors: [] };
  }

  /**
   * A main program with the loader and the vDSO. Its `$ORIGIN` is the directory of its realpath
   * (the kernel's /proc/self/exe), or of the path as given for `ld.so --list` (glibc < 2.42).
   */
  private programTree(path: string, file: LibFile, asGiven: boolean): Tree {
    const interpreter = file.info?.interpreter ?? null;
    const set = this.baseSet(interpreter);
    const real = asGiven ? null : this.fs.realpath(path);
    const main = this.object(path, file, null, this.fs.absolute(dirnameOf(real ?? path)));
    set.main = main;
    set.add(main, [path]);
    this.setLibraryPath(main);
    const musl = this.muslEnv(interpreter ?? this.profile.interpreter);
    return { set, musl, shortnames: new Map(), queue: [main], edges: [], byEdge: new Map(), errors: [] };
  }

  /** The search context of a musl loader (null for any other loader); one per loader path. */
  private muslEnv(interpreter: string): MuslEnv | null {
    const arch = muslArch(interpreter);
    if (arch === null) return null;
    let env = this.muslEnvs.get(interpreter);
    if (!env) {
      const ldLibraryPath = this.opts.ldLibraryPath;
      env = {
        interpreter,
        candidates: this.candidates,
        libraryPath: ldLibraryPath == null ? null : muslPathList(ldLibraryPath),
        systemPath: muslSystemPath(this.fs, interpreter, arch),
        onRunPath: (owner, via, dirs) => this.noteRunPath(owner.path, via, dirs),
      };
      this.muslEnvs.set(interpreter, env);
    }
    return env;
  }

  /** `LD_LIBRARY_PATH`, with the main program's token values. */
  private setLibraryPath(main: LoadedObject | null): void {
    this.env.libraryPath = libraryPathDirs(this.opts.ldLibraryPath ?? null, this.dst(main?.origin ?? null));
    for (const d of this.env.libraryPath ?? []) this.noteRunPath("LD_LIBRARY_PATH", "ld_library_path", [d]);
  }

  /** dlopen mode: what is loaded before each root (the exe's tree, or just the loader). */
  private contextTree(): Tree {
    if (this.context) return this.context;
    const exe = this.opts.exe;
    const p = exe ? this.candidates.probe(exe) : null;
    if (!exe || !p || p.kind !== "ok") {
      if (exe && p) this.exeReport = this.unloadable(exe, `${exe}: ${probeError(p, this.target)}`);
      const set = this.baseSet(null);
      const musl = this.muslEnv(this.profile.interpreter);
      this.context = { set, musl, shortnames: new Map(), queue: [], edges: [], byEdge: new Map(), errors: [] };
      return this.context;
    }
    const tree = this.programTree(exe, p.file, false);
    this.walk(tree);
    this.exeReport = this.report(exe, tree);
    for (const o of tree.set.objects) o.preloaded = true;
    this.context = tree;
    return tree;
  }

  /** Breadth-first over DT_NEEDED. */
  private walk(tree: Tree): void {
    for (let i = 0; i < tree.queue.length; i++) {
      const obj = tree.queue[i]!;
      if (!obj.info) {
        if (obj.file?.parseError) tree.errors.push(`${obj.path}: ${obj.file.parseError}`);
        continue;
      }
      for (const name of obj.info.needed) {
        const edge = this.needed(name, obj, tree);
        tree.edges.push(edge);
        tree.byEdge.set(`${obj.path}\0${name}`, edge);
      }
    }
  }

  private needed(name: string, requester: LoadedObject, tree: Tree): NeededRecord {
    const edge: NeededRecord = { name, by: requester.path, status: "found", path: null, via: null, from: null, missingVersions: [] };
    if (tree.musl) return this.neededMusl(name, requester, tree, tree.musl, edge);
    const expanded = expandTokens(name, this.dst(requester.origin));
    if (expanded === null || expanded === "") return { ...edge, status: "skipped" };
    const known = tree.set.lookup(expanded);
    if (known) {
      tree.set.addName(known, expanded);
      return { ...edge, path: known.path, via: "loaded" };
    }
    const res = expanded.includes("/") ? this.direct(expanded) : searchName(expanded, requester, tree.set.main, this.env);
    return this.place(res, expanded, requester, tree, edge);
  }

  /** `load_library` of musl (musl.ts): its own names, short names, then path or search. */
  private neededMusl(name: string, requester: LoadedObject, tree: Tree, env: MuslEnv, edge: NeededRecord): NeededRecord {
    if (name === "") return { ...edge, status: "skipped" };
    if (isMuslReserved(name) || name === env.interpreter) {
      const rtld = tree.set.lookup(env.interpreter);
      return { ...edge, path: rtld?.path ?? env.interpreter, via: "loaded" };
    }
    if (!name.includes("/")) {
      const known = tree.shortnames.get(name);
      if (known) return { ...edge, path: known.path, via: "loaded" };
    }
    const res = name.includes("/") ? this.direct(name) : searchMusl(name, requester, tree.set.main, env);
    const out = this.place(res, name, requester, tree, edge);
    // A library found by a search gets its short name, the basename of the path it was opened by
    // (one first opened by a path gets it when a search finds its inode again); the lookup
    // returns the first object in load order with that name.
    if (res.kind === "found" && !name.includes("/") && out.path !== null) {
      const obj = tree.set.lookup(out.path);
      const short = out.path.slice(out.path.lastIndexOf("/") + 1);
      if (obj && !tree.shortnames.has(short)) tree.shortnames.set(short, obj);
    }
    return out;
  }

  private direct(path: string): SearchResult {
    const p = this.candidates.probe(path);
    if (p.kind === "ok") return { kind: "found", path, file: p.file, via: "direct", from: null, dir: dirnameOf(path) };
    if (p.kind === "fatal") return { kind: "fatal", path, message: p.message };
    return { kind: "missing", otherClass: p.kind === "other-class", tried: true, searched: [] };
  }

  /** Turns a search result into the edge, mapping a new object when one was found. */
  private place(res: SearchResult, name: string, requester: LoadedObject, tree: Tree, edge: NeededRecord): NeededRecord {
    if (res.kind === "fatal") {
      const error = `${res.path}: ${res.message}`;
      tree.errors.push(error);
      return { ...edge, status: "fatal", path: res.path, error };
    }
    if (res.kind === "missing" && tree.musl) {
      // musl's words ("Error loading shared library NAME: No such file or directory").
      return { ...edge, status: "missing", error: `${name}: No such file or directory`, ...(res.searched.length ? { searched: res.searched } : {}) };
    }
    if (res.kind === "missing") {
      const error = `${name}: ${res.otherClass ? "wrong ELF class: ELFCLASS32" : res.tried ? NO_FILE : NO_FILE_UNTRIED}`;
      const searched: SearchedDir[] = res.searched;
      return { ...edge, status: "missing", error, ...(searched.length ? { searched } : {}) };
    }
    const same = tree.set.sameFile(res.file);
    if (same) {
      tree.set.addName(same, name);
      return { ...edge, path: same.path, via: "loaded" };
    }
    const obj = this.object(res.path, res.file, requester, this.fs.absolute(dirnameOf(res.path)));
    tree.set.add(obj, [name]);
    tree.queue.push(obj);
    const from = res.via === "rpath" || res.via === "runpath" ? (res.from?.path ?? null) : null;
    return { ...edge, path: res.path, via: res.via, from, dir: res.dir };
  }

  private report(path: string, tree: Tree): FileReport {
    // musl's loader checks no symbol versions.
    const v = tree.musl ? { gaps: [], warnings: [] } : checkVersions(tree.set, (o) => this.fs.host(o.path));
    const errors = [...tree.errors];
    for (const g of v.gaps) {
      errors.push(versionMessage(g));
      tree.byEdge.get(`${g.requirer.path}\0${g.file}`)?.missingVersions.push(g.version);
    }
    const missing = [...new Set(tree.edges.filter((e) => e.status === "missing").map((e) => e.name))];
    const fatal = tree.edges.some((e) => e.status === "fatal") || tree.errors.length > 0;
    const status = fatal ? "error" : missing.length > 0 || v.gaps.length > 0 ? "unresolved" : "ok";
    return { type: "file", path, status, needed: tree.edges, missing, errors, warnings: v.warnings };
  }

  private noteRunPath(owner: string, via: RunPathUse["via"], dirs: string[]): void {
    for (const dir of dirs) {
      const key = `${via}\0${dir}`;
      const use = this.uses.get(key) ?? { dir, via, owners: [] };
      if (use.owners.length < MAX_OWNERS && !use.owners.includes(owner)) use.owners.push(owner);
      this.uses.set(key, use);
    }
  }
}
