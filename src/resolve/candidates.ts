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
  | { kind: "other-class" }
  | { kind: "other-machine" }
  | { kind: "fatal"; message: string }
  | { kind: "ok"; file: LibFile };

/** The loader this resolver models: x86-64, ELFCLASS64, little endian. */
export const TARGET = { elfClass: 2, machine: 62, ehdrSize: 64, phdrSize: 56 } as const;

const ABSENT: Probe = { kind: "absent" };
/** glibc 2.36 `LIBC_ABI_MAX`: ABI versions below it are valid with the GNU OS ABI. */
const LIBC_ABI_MAX = 4;
const ELFOSABI_GNU = 3;

const fatal = (message: string): Probe => ({ kind: "fatal", message });
/** glibc's message for a candidate that is a directory. */
export const DIRECTORY_MESSAGE = "cannot read file data: Error 21";

/** The checks on the first bytes, in `open_verify`'s order; null when the header passes. */
export function verifyHeader(h: Buffer, len: number): Probe | null {
  if (len < TARGET.ehdrSize) return fatal("file too short");
  if (h.readUInt32BE(0) !== 0x7f454c46) return fatal("invalid ELF header");
  if (h[4] !== TARGET.elfClass) return { kind: "other-class" };
  if (h[5] !== 1) return fatal("ELF file data encoding not little-endian");
  if (h[6] !== 1) return fatal("ELF file version ident does not match current one");
  const osabi = h[7]!;
  if (osabi !== 0 && osabi !== ELFOSABI_GNU) return fatal("ELF file OS ABI invalid");
  const abiVersion = h[8]!;
  if (abiVersion !== 0 && !(osabi === ELFOSABI_GNU && abiVersion < LIBC_ABI_MAX)) return fatal("ELF file ABI version invalid");
  for (let i = 9; i < 16; i++) if (h[i] !== 0) return fatal("nonzero padding in e_ident");
  if (h.readUInt32LE(20) !== 1) return fatal("ELF file version does not match current one");
  if (h.readUInt16LE(18) !== TARGET.machine) return { kind: "other-machine" };
  const type = h.readUInt16LE(16);
  if (type !== 2 && type !== 3) return fatal("only ET_DYN and ET_EXEC can be loaded");
  if (h.readUInt16LE(54) !== TARGET.phdrSize) return fatal("ELF file's phentsize not the expected size");
  return null;
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
  ) {}

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
    const head = Buffer.alloc(TARGET.ehdrSize);
    const len = readSync(fd, head, 0, head.length, 0);
    const bad = verifyHeader(head, len);
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
