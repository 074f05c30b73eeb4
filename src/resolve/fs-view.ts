/**
 * The file system as the target loader sees it: paths are "virtual" (as `ld.so` would spell them
 * inside the target), mapped onto the host under an optional root directory (`--root DIR`, where
 * absolute symlinks are resolved inside DIR, as in a chroot).
 *
 * Directory listings are read once and cached, so probing a candidate that does not exist costs no
 * system call once its directory was listed; a directory whose parent listing lacks it is never
 * read at all (this prunes the dozens of `glibc-hwcaps/...` and legacy hwcaps subdirectories that
 * every search directory would otherwise cost).
 */
import { readdirSync, readlinkSync, realpathSync } from "node:fs";
import { posix } from "node:path";
import { noteConsulted, noteLookup, noteRealpath } from "../shared/consulted.js";

/** What a listing knows about one entry: 1 for a symlink, 0 otherwise. */
export type Kind = 0 | 1;
const SYMLINK: Kind = 1;

/** A cached listing: entries by name, or null when the directory cannot be read. */
export type Listing = Map<string, Kind> | null;

const MAX_LINKS = 40;

/** Splits an absolute path into its non-empty components. */
function parts(p: string): string[] {
  return p.split("/").filter((c) => c !== "");
}

export class FsView {
  private readonly listings = new Map<string, Listing>();
  /** The host path each listing was read from. */
  private readonly hostDirs = new Map<string, string>();
  private readonly links = new Map<string, string>();
  /** Listings that failed with something other than "does not exist" (e.g. EACCES). */
  private readonly unreadable = new Set<string>();
  /** Directories read so far (each at most once). */
  listed = 0;

  /**
   * @param root host directory that stands for `/` ("" for the host itself)
   * @param cwd the target's current directory (virtual), for relative paths
   */
  constructor(
    readonly root: string,
    readonly cwd: string,
  ) {}

  /** The virtual absolute form of `p` (relative to the CWD); not normalised. */
  absolute(p: string): string {
    if (p.startsWith("/")) return p;
    if (p === "") return this.cwd;
    return this.cwd.endsWith("/") ? this.cwd + p : `${this.cwd}/${p}`;
  }

  /** The host path of a virtual path. */
  host(p: string): string {
    const abs = this.absolute(p);
    if (this.root === "") return abs;
    return this.root + this.resolveInRoot(abs);
  }

  /** The virtual form of a host path under the root, or null when it is outside. */
  virtualOf(hostPath: string): string | null {
    if (this.root === "") return hostPath;
    if (hostPath === this.root) return "/";
    return hostPath.startsWith(this.root + "/") ? hostPath.slice(this.root.length) : null;
  }

  /** The canonical virtual path (symlinks resolved), or null when it does not exist. */
  realpath(p: string): string | null {
    const host = this.host(p);
    let real: string | null;
    try {
      real = realpathSync(host);
    } catch {
      real = null;
    }
    noteRealpath(host, real);
    if (real === null) return null;
    return this.root === "" ? real : this.virtualOf(real);
  }

  /**
   * Whether `path` (virtual) may exist: false only when a cached listing proves it absent. True
   * means "try to open it".
   */
  mayExist(path: string): boolean {
    const abs = this.absolute(path);
    const slash = abs.lastIndexOf("/");
    const dir = slash === 0 ? "/" : abs.slice(0, slash);
    const base = abs.slice(slash + 1);
    if (base === "" || base === "." || base === "..") return true;
    const listing = this.list(dir);
    if (listing) return this.has(dir, listing, base);
    return this.unreadable.has(dir);
  }

  /** Names in a virtual directory (cached); null when it cannot be listed. */
  list(dir: string): Listing {
    const cached = this.listings.get(dir);
    if (cached !== undefined) return cached;
    const listing = this.provenAbsent(dir) ? null : this.read(dir);
    this.listings.set(dir, listing);
    return listing;
  }

  /** The parent's listing shows that `dir` is not there (no system call for `dir` itself). */
  private provenAbsent(dir: string): boolean {
    if (dir === "/") return false;
    const slash = dir.lastIndexOf("/");
    if (slash < 0) return false;
    const base = dir.slice(slash + 1);
    if (base === "" || base === "." || base === "..") return false;
    const parent = slash === 0 ? "/" : dir.slice(0, slash);
    const listing = this.list(parent);
    if (listing) return !this.has(parent, listing, base);
    return !this.unreadable.has(parent);
  }

  /** A lookup in a listing (noted for the result cache). */
  private has(dir: string, listing: Map<string, Kind>, name: string): boolean {
    const found = listing.has(name);
    const host = this.hostDirs.get(dir);
    if (host !== undefined) noteLookup(host, name, found);
    return found;
  }

  private read(dir: string): Listing {
    this.listed++;
    const host = this.host(dir);
    this.hostDirs.set(dir, host);
    try {
      const entries = readdirSync(host, { withFileTypes: true });
      const m = new Map<string, Kind>();
      for (const e of entries) m.set(e.name, e.isSymbolicLink() ? SYMLINK : 0);
      return m;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR") this.unreadable.add(dir);
      return null;
    }
  }

  /** Resolves symlinks inside the root, component by component (kernel rules for `..`). */
  private resolveInRoot(abs: string): string {
    let todo = parts(abs);
    const done: string[] = [];
    let hops = 0;
    while (todo.length > 0) {
      const c = todo.shift()!;
      if (c === ".") continue;
      if (c === "..") {
        done.pop();
        continue;
      }
      const here = "/" + done.join("/");
      const listing = this.list(here);
      const kind = listing && this.has(here, listing, c) ? listing.get(c) : undefined;
      if (kind !== SYMLINK || ++hops > MAX_LINKS) {
        done.push(c);
        continue;
      }
      const target = this.readlink(posix.join(here, c));
      if (target.startsWith("/")) done.length = 0;
      todo = [...parts(target), ...todo];
    }
    return "/" + done.join("/");
  }

  private readlink(virtualPath: string): string {
    let t = this.links.get(virtualPath);
    if (t === undefined) {
      noteConsulted(this.root + virtualPath);
      try {
        t = readlinkSync(this.root + virtualPath);
      } catch {
        t = ".";
      }
      this.links.set(virtualPath, t);
    }
    return t;
  }
}
