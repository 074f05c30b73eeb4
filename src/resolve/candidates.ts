/**
 * The loader's candidate check (`open_verify`, loader.md §7) and the identity cache.
 *
 * `probe(path)` answers what `ld.so` does with one candidate file: skip it (absent, other ELF class
 * or machine), reject the whole load (fatal: too short, not ELF, wrong byte order, bad OS ABI, a
 * directory...), abandon the rest of the current path list (an unexpected open error), or accept it.
 * Answers are cached by path; accepted files are parsed once per inode with the Wasm core, so two
 * paths to one file (a symlinked directory, a hard link) share one record, as in the loader.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { noteConsulted } from "../shared/consulted.js";
import { CoreEngine, fdSource } from "../core/engine.js";
import type { ElfInfo } from "../core/types.js";
import type { FsView } from "./fs-view.js";

/** One file the loader accepted: identified by device and inode. */
export interface LibFile {
  /** `dev:ino`, the loader's "same file" test. */
  key: string;
  info: ElfInfo | null;
  /** Why the core could not read the accepted file (then `info` is null). */
  parseError: string | null;
}

export type Probe =
  | { kind: "absent" }
  | { kind: "abandon" }
  /** Skipped: another class or machine (`target`: the file's own, for a resolver of its kind). */
  | { kind: "other-class"; target: Target | null }
  | { kind: "other-machine"; target: Target | null }
  /** `target` is set when the file is refused for its byte order: it is another loader's file. */
  | { kind: "fatal"; message: string; target?: Target }
  | { kind: "ok"; file: LibFile };

/**
 * The kind of loader a resolver models: ELF class (1 = 32-bit, 2 = 64-bit), byte order (1 = little,
 * 2 = big endian) and `e_machine`; `eFlags` (the ELF header's) picks the cache entries of a float
 * ABI where it matters (ARM, MIPS, RISC-V; see `cacheFlagsFor`). glibc's loader accepts only files
 * of its own class and machine (others are skipped) and byte order (others stop the load).
 */
export interface Target {
  elfClass: 1 | 2;
  data: 1 | 2;
  machine: number;
  eFlags?: number;
}

export const X86_64: Target = { elfClass: 2, data: 1, machine: 62 };

/** `e_machine` of Node's `process.arch` values, with class and byte order (the host's target). */
const NODE_ARCH: Record<string, Target> = {
  x64: X86_64,
  ia32: { elfClass: 1, data: 1, machine: 3 },
  arm64: { elfClass: 2, data: 1, machine: 183 },
  arm: { elfClass: 1, data: 1, machine: 40 },
  ppc64: { elfClass: 2, data: 1, machine: 21 }, // Node runs on ppc64le only
  s390x: { elfClass: 2, data: 2, machine: 22 },
  riscv64: { elfClass: 2, data: 1, machine: 243 },
  loong64: { elfClass: 2, data: 1, machine: 258 },
};

/** The target of the machine running elfpatch (x86-64 where Node's arch is not in the table). */
export function hostTarget(arch: string = process.arch): Target {
  return NODE_ARCH[arch] ?? X86_64;
}

/**
 * The `e_flags` bits that choose a loader and its cache entries (float ABI, MIPS n32 and NaN
 * encoding); a target keeps only these, so files that differ in other bits share a resolver.
 */
const ABI_FLAG_BITS: Record<number, number> = { 40: 0x400, 8: 0x420, 243: 0x6, 258: 0x7 };

/** The target a file's ELF header describes, or null when the bytes are no ELF header. */
export function targetOf(h: Buffer, len: number): Target | null {
  if (len < 20 || h.readUInt32BE(0) !== 0x7f454c46) return null;
  const elfClass = h[4], data = h[5];
  if ((elfClass !== 1 && elfClass !== 2) || (data !== 1 && data !== 2)) return null;
  const machine = data === 1 ? h.readUInt16LE(18) : h.readUInt16BE(18);
  const flagsAt = elfClass === 2 ? 48 : 36;
  const t: Target = { elfClass, data, machine };
  if (len >= flagsAt + 4) {
    const bits = ABI_FLAG_BITS[machine];
    if (bits !== undefined) t.eFlags = (data === 1 ? h.readUInt32LE(flagsAt) : h.readUInt32BE(flagsAt)) & bits;
  }
  return t;
}

/** Whether a loader for `a` loads files of `b` (class, byte order and machine; flags aside). */
export const sameTarget = (a: Target, b: Target): boolean => a.elfClass === b.elfClass && a.data === b.data && a.machine === b.machine;

/** A short key for a target (maps of per-target resolvers). */
export const targetKey = (t: Target): string => `${t.elfClass}:${t.data}:${t.machine}:${t.eFlags ?? ""}`;

const ABSENT: Probe = { kind: "absent" };
/** glibc 2.36 `LIBC_ABI_MAX`: ABI versions below it are valid with the GNU OS ABI. */
const LIBC_ABI_MAX = 4;
const ELFOSABI_GNU = 3;

const fatal = (message: string): Probe => ({ kind: "fatal", message });
/** glibc's message for a candidate that is a directory. */
export const DIRECTORY_MESSAGE = "cannot read file data: Error 21";

/**
 * The checks on the first bytes, in `open_verify`'s order; null when the header passes. A file
 * refused for its class, byte order or machine carries its own target (read from the same bytes).
 */
export function verifyHeader(h: Buffer, len: number, target: Target = X86_64): Probe | null {
  const is64 = target.elfClass === 2;
  if (len < (is64 ? 64 : 52)) return fatal("file too short");
  if (h.readUInt32BE(0) !== 0x7f454c46) return fatal("invalid ELF header");
  if (h[4] !== target.elfClass) return { kind: "other-class", target: targetOf(h, len) };
  if (h[5] !== target.data) {
    const own = targetOf(h, len);
    const message = `ELF file data encoding not ${target.data === 1 ? "little" : "big"}-endian`;
    return own ? { kind: "fatal", message, target: own } : fatal(message);
  }
  if (h[6] !== 1) return fatal("ELF file version ident does not match current one");
  const osabi = h[7]!;
  if (osabi !== 0 && osabi !== ELFOSABI_GNU) return fatal("ELF file OS ABI invalid");
  const abiVersion = h[8]!;
  if (abiVersion !== 0 && !(osabi === ELFOSABI_GNU && abiVersion < LIBC_ABI_MAX)) return fatal("ELF file ABI version invalid");
  for (let i = 9; i < 16; i++) if (h[i] !== 0) return fatal("nonzero padding in e_ident");
  const u16 = (at: number): number => (target.data === 1 ? h.readUInt16LE(at) : h.readUInt16BE(at));
  const u32 = (at: number): number => (target.data === 1 ? h.readUInt32LE(at) : h.readUInt32BE(at));
  if (u32(20) !== 1) return fatal("ELF file version does not match current one");
  if (u16(18) !== target.machine) return { kind: "other-machine", target: targetOf(h, len) };
  const type = u16(16);
  if (type !== 2 && type !== 3) return fatal("only ET_DYN and ET_EXEC can be loaded");
  if (u16(is64 ? 54 : 42) !== (is64 ? 56 : 32)) return fatal("ELF file's phentsize not the expected size");
  return null;
}

/** The target the ELF header of `path` (virtual) describes; null: absent, unreadable or not ELF. */
export function headerTarget(fs: FsView, path: string): Target | null {
  let fd: number;
  try {
    fd = openSync(fs.host(fs.absolute(path)), "r");
  } catch {
    return null;
  }
  try {
    const head = Buffer.alloc(64);
    return targetOf(head, readSync(fd, head, 0, head.length, 0));
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** The target of a file the candidate check refused as another loader's (null for any other probe). */
export function otherTarget(p: Probe): Target | null {
  return p.kind === "other-class" || p.kind === "other-machine" || p.kind === "fatal" ? p.target ?? null : null;
}

export class Candidates {
  private readonly byPath = new Map<string, Probe>();
  private readonly byKey = new Map<string, LibFile>();
  /** Files opened (for tests: each path at most once). */
  opened = 0;

  constructor(
    private readonly fs: FsView,
    private readonly engine: CoreEngine,
    private readonly plannedInfo?: (key: string, path: string, info: ElfInfo) => ElfInfo,
    readonly target: Target = X86_64,
  ) {}

  /** Whether `path` (virtual) may exist: false only when a cached listing proves it absent. */
  mayExist(path: string): boolean {
    const abs = this.fs.absolute(path);
    const p = this.byPath.get(abs);
    return p === undefined ? this.fs.mayExist(abs) : p !== ABSENT;
  }

  /** What the loader does with the candidate `path` (virtual; relative = relative to the CWD). */
  probe(path: string): Probe {
    const abs = this.fs.absolute(path);
    let p = this.byPath.get(abs);
    if (p === undefined) {
      p = this.fs.mayExist(abs) ? this.open(abs) : ABSENT;
      this.byPath.set(abs, p);
    }
    return p;
  }

  private open(abs: string): Probe {
    let fd: number;
    noteConsulted(this.fs.host(abs));
    try {
      fd = openSync(this.fs.host(abs), "r");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === "ENOENT" || code === "EACCES" || code === "ENOTDIR" ? ABSENT : { kind: "abandon" };
    }
    this.opened++;
    try {
      return this.verify(fd, this.fs.host(abs));
    } finally {
      closeSync(fd);
    }
  }

  private verify(fd: number, hostPath: string): Probe {
    const st = fstatSync(fd);
    if (st.isDirectory()) return fatal(DIRECTORY_MESSAGE);
    const head = Buffer.alloc(64);
    const len = readSync(fd, head, 0, head.length, 0);
    const bad = verifyHeader(head, len, this.target);
    if (bad) return bad;
    const key = `${st.dev}:${st.ino}`;
    let file = this.byKey.get(key);
    if (!file) {
      file = this.inspect(fd, st.size, key);
      if (file.info && this.plannedInfo) file.info = this.plannedInfo(key, hostPath, file.info);
      this.byKey.set(key, file);
    }
    return { kind: "ok", file };
  }

  private inspect(fd: number, size: number, key: string): LibFile {
    try {
      return { key, info: this.engine.inspect(fdSource(fd, size), ""), parseError: null };
    } catch (err) {
      return { key, info: null, parseError: (err as Error).message };
    }
  }
}
