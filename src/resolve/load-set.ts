/**
 * The objects of one process (one namespace): what `_dl_lookup_map` and the inode check see
 * (loader.md §2). Objects are matched by the path they were opened by, by every name they were
 * requested as, and by `DT_SONAME`; the first object (in load order) with a name wins.
 */
import type { ElfInfo } from "../core/types.js";
import type { LibFile } from "./candidates.js";

export interface LoadedObject {
  /** `l_name`: the path the object was opened by (not normalised). */
  path: string;
  file: LibFile | null;
  info: ElfInfo | null;
  /** `$ORIGIN` (absolute), or null when unknown. */
  origin: string | null;
  /** `l_loader`: the first object that needed this one; null for the main program and dlopen roots. */
  loader: LoadedObject | null;
  /** Whether this object was there before the root was loaded (its own checks are not repeated). */
  preloaded: boolean;
  /** Expanded `DT_RPATH` (null: none, or erased by `DT_RUNPATH`); computed on first use. */
  rpathDirs?: string[] | null;
  /** Expanded `DT_RUNPATH`; computed on first use. */
  runpathDirs?: string[] | null;
}

export class LoadSet {
  readonly objects: LoadedObject[] = [];
  private readonly byName = new Map<string, LoadedObject>();
  private readonly byKey = new Map<string, LoadedObject>();

  constructor(
    /** The main program, or null (a dlopen root without `--exe`). */
    public main: LoadedObject | null = null,
  ) {}

  /** A copy that can grow independently (objects themselves are shared). */
  clone(): LoadSet {
    const c = new LoadSet(this.main);
    c.objects.push(...this.objects);
    for (const [k, v] of this.byName) c.byName.set(k, v);
    for (const [k, v] of this.byKey) c.byKey.set(k, v);
    return c;
  }

  /** `_dl_lookup_map`: the object known by this name, if any. */
  lookup(name: string): LoadedObject | undefined {
    return this.byName.get(name);
  }

  /** The object for the same file (device and inode), if any. */
  sameFile(file: LibFile): LoadedObject | undefined {
    return this.byKey.get(file.key);
  }

  /** Records another name the object was requested as. */
  addName(obj: LoadedObject, name: string): void {
    if (!this.byName.has(name)) this.byName.set(name, obj);
  }

  /** Adds a newly mapped object under its path, requested names and SONAME. */
  add(obj: LoadedObject, names: string[], soname: string | null = obj.info?.soname ?? null): void {
    this.objects.push(obj);
    this.addName(obj, obj.path);
    for (const n of names) this.addName(obj, n);
    if (soname) this.addName(obj, soname);
    if (obj.file) this.byKey.set(obj.file.key, obj);
  }
}
