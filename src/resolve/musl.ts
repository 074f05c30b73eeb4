/**
 * musl's loader (`ldso/dynlink.c`, `load_library`), for trees whose loader is `ld-musl-<arch>.so.1`
 * (Alpine, musllinux wheels, `musl-gcc` output). Its rules differ from glibc's in every step that
 * matters here:
 *
 * - Names of the C library itself (`libc.*`, `libpthread.*`, `librt.*`, `libm.*`, `libdl.*`,
 *   `libutil.*`, `libxnet.*`) are the loader, whatever the directories hold.
 * - A name without `/` matches a loaded object only by the name it was found by (its "short name",
 *   the basename of the path it was opened by); `DT_SONAME` plays no part. Then the object with the
 *   same device and inode, if any.
 * - The search: `LD_LIBRARY_PATH`; then the run path of the requester, of the object that loaded
 *   it, and so on up to the main program (a `dlopen`ed root counts as loaded by the main program);
 *   each object's run path is its `DT_RUNPATH`, else its `DT_RPATH`: both are inherited. The only
 *   token is `$ORIGIN` (`${ORIGIN}`); a run path with any other `$` is ignored whole. Then the
 *   system path: the file `<prefix>/etc/ld-musl-<arch>.path` (`<prefix>`: the loader's path less
 *   its last two components; entries separated by `:` or newlines), else `/lib:/usr/local/lib:/usr/lib`
 *   when that file does not exist (any other error reading it: no system path).
 * - No cache, no hwcaps subdirectories, no check of the candidate before it is taken: the first
 *   file that opens is the answer, and a file of another class or machine fails the load ("Exec
 *   format error") instead of being skipped.
 * - Symbol versions are not checked.
 */
import { readFileSync } from "node:fs";
import { DIRECTORY_MESSAGE, type Candidates } from "./candidates.js";
import { joinDir } from "./expand.js";
import type { FsView } from "./fs-view.js";
import type { LoadedObject } from "./load-set.js";
import type { SearchResult } from "./search-path.js";
import type { SearchedDir } from "./types.js";
import { noteConsulted } from "../shared/consulted.js";

/** `ld-musl-x86_64.so.1` -> `x86_64`. */
const MUSL_LOADER = /^ld-musl-([A-Za-z0-9_]+)\.so\.1$/;
/** musl's default system path when the path file does not exist. */
export const MUSL_DEFAULT_PATH = ["/lib", "/usr/local/lib", "/usr/lib"];
/** The loader's own names (`reserved` in `load_library`): `lib` + one of these + anything. */
const RESERVED = ["c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet."];
/** `NAME_MAX`: a longer name is never searched. */
const NAME_MAX = 255;
/** The musl loader a file system has where glibc's x86-64 loader would be. */
export const MUSL_X86_64_INTERPRETER = "/lib/ld-musl-x86_64.so.1";

/**
 * musl's loader path for files of a target (`/lib/ld-musl-<LDSO_ARCH>.so.1`; musl's
 * `arch/<arch>/reloc.h`), or null for a target musl does not name here: x86_64, x32, i386,
 * aarch64 (`_be`), arm (`eb` for big endian, `hf` for the hard-float ABI), powerpc64 (`le`),
 * powerpc, s390x, riscv64 (`-sf`, `-sp` for soft and single float), loongarch64, m68k, mips,
 * mips64, mipsn32 (`r6` for release 6, `el` for little endian; their soft-float `-sf` is not
 * told by `e_flags`, so the hard-float name). The float and endian parts come from the header (`e_flags`, `EI_DATA`).
 */
export function muslInterpreter(t: { elfClass: number; data: number; machine: number; eFlags?: number }): string | null {
  const f = t.eFlags ?? 0;
  const le = t.data === 1;
  let arch: string | null;
  switch (t.machine) {
    case 62: arch = t.elfClass === 2 ? "x86_64" : "x32"; break;
    case 3: arch = "i386"; break;
    case 183: arch = le ? "aarch64" : "aarch64_be"; break;
    case 40: arch = `arm${le ? "" : "eb"}${f & 0x400 ? "hf" : ""}`; break; // EF_ARM_ABI_FLOAT_HARD
    case 21: arch = le ? "powerpc64le" : "powerpc64"; break;
    case 20: arch = "powerpc"; break;
    case 22: arch = "s390x"; break;
    case 243: arch = `riscv${t.elfClass === 2 ? 64 : 32}${["-sf", "-sp", "", ""][(f >> 1) & 3]}`; break; // EF_RISCV_FLOAT_ABI
    case 258: arch = "loongarch64"; break;
    case 4: arch = "m68k"; break;
    case 8: {
      const n32 = (f & 0x20) !== 0; // EF_MIPS_ABI2
      const r6 = f >>> 28 === 0x9 || f >>> 28 === 0xa; // EF_MIPS_ARCH_32R6, _64R6
      arch = `${t.elfClass === 2 ? "mips64" : n32 ? "mipsn32" : "mips"}${r6 ? "r6" : ""}${le ? "el" : ""}`;
      break;
    }
    default: arch = null;
  }
  return arch === null ? null : `/lib/ld-musl-${arch}.so.1`;
}

/** The architecture of a musl loader path (`/lib/ld-musl-x86_64.so.1` -> `x86_64`), or null (not musl's). */
export function muslArch(interpreter: string): string | null {
  const m = MUSL_LOADER.exec(interpreter.slice(interpreter.lastIndexOf("/") + 1));
  return m ? m[1]! : null;
}

/** The path file musl's loader at `interpreter` reads (`/lib/ld-musl-x86_64.so.1` -> `/etc/ld-musl-x86_64.path`). */
export function muslPathFile(interpreter: string, arch: string): string {
  // The prefix is the loader's path up to its second-to-last `/` (empty for a relative path).
  const last = interpreter.lastIndexOf("/");
  const prefix = interpreter.startsWith("/") && last > 0 ? interpreter.slice(0, Math.max(0, interpreter.lastIndexOf("/", last - 1))) : "";
  return `${prefix}/etc/ld-musl-${arch}.path`;
}

/** Entries of a musl path list: separated by `:` or newlines, empty entries skipped. */
export function muslPathList(text: string): string[] {
  return text.split(/[:\n]/).filter((s) => s !== "");
}

/** Whether musl's loader answers `name` with itself. */
export function isMuslReserved(name: string): boolean {
  return name.startsWith("lib") && RESERVED.some((r) => name.startsWith(r, 3));
}

/** What a musl search needs besides the requester. */
export interface MuslEnv {
  /** The loader's path (`PT_INTERP`), which answers the reserved names. */
  interpreter: string;
  candidates: Candidates;
  /** `LD_LIBRARY_PATH` as given (musl expands no tokens in it), or null. */
  libraryPath: string[] | null;
  /** The system path (from the path file, or the default). */
  systemPath: string[];
  /** Called with every run-path directory list the first time it is consulted. */
  onRunPath?: (owner: LoadedObject, via: "rpath" | "runpath", dirs: string[]) => void;
}

/** The system path of the musl loader at `interpreter` (a path of the tree `fs` shows). */
export function muslSystemPath(fs: FsView, interpreter: string, arch: string): string[] {
  const file = fs.host(muslPathFile(interpreter, arch));
  noteConsulted(file);
  try {
    return muslPathList(readFileSync(file, "latin1"));
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? MUSL_DEFAULT_PATH : [];
  }
}

/** `fixup_rpath`: the object's run path with `$ORIGIN` expanded; null when it has none or it is ignored. */
export function muslRunPath(obj: LoadedObject, env: MuslEnv): { via: "rpath" | "runpath"; dirs: string[] } | null {
  const runpath = obj.info?.runpath;
  const raw = runpath ?? obj.info?.rpath;
  if (raw == null) return null;
  const via = runpath != null ? "runpath" : "rpath";
  const cached = via === "runpath" ? obj.runpathDirs : obj.rpathDirs;
  if (cached !== undefined) return cached === null ? null : { via, dirs: cached };
  let dirs: string[] | null = null;
  // Every `$` must start `$ORIGIN` or `${ORIGIN}`; the origin is the object's directory.
  const tokens = raw.match(/\$(\{ORIGIN\}|ORIGIN)?/g) ?? [];
  if (!tokens.some((t) => t === "$") && !(tokens.length > 0 && obj.origin === null)) {
    dirs = muslPathList(raw.replace(/\$(\{ORIGIN\}|ORIGIN)/g, () => obj.origin ?? ""));
  }
  if (via === "runpath") obj.runpathDirs = dirs;
  else obj.rpathDirs = dirs;
  if (dirs) env.onRunPath?.(obj, via, dirs);
  return dirs === null ? null : { via, dirs };
}

/** The search for `name` (no `/`, not reserved, not loaded under that short name). */
export function searchMusl(name: string, requester: LoadedObject, main: LoadedObject | null, env: MuslEnv): SearchResult {
  const searched: SearchedDir[] = [];
  if (name.length > NAME_MAX) return { kind: "missing", otherClass: false, tried: false, searched };
  const sources: { via: SearchedDir["via"]; owner: LoadedObject | null; dirs: string[] }[] = [];
  if (env.libraryPath) sources.push({ via: "ld_library_path", owner: null, dirs: env.libraryPath });
  const chain: LoadedObject[] = [];
  for (let l: LoadedObject | null = requester; l; l = l.loader) chain.push(l);
  if (main && !chain.includes(main)) chain.push(main);
  for (const l of chain) {
    const rp = muslRunPath(l, env);
    if (rp) sources.push({ via: rp.via, owner: l, dirs: rp.dirs });
  }
  sources.push({ via: "default", owner: null, dirs: env.systemPath });
  let tried = false;
  for (const src of sources) {
    for (const dir of src.dirs) {
      searched.push({ dir, via: src.via });
      const path = joinDir(dir, name);
      const p = env.candidates.probe(path);
      if (p.kind === "absent") continue;
      tried = true;
      // Any other open error ends the whole search.
      if (p.kind === "abandon") return { kind: "missing", otherClass: false, tried, searched };
      if (p.kind === "ok") return { kind: "found", path, file: p.file, via: src.via, from: src.owner, dir };
      // The first file that opens is taken: anything but a loadable ELF file fails the load (a
      // directory fails its read; musl checks no ELF identification, so every other refusal is
      // its ENOEXEC).
      const isDir = p.kind === "fatal" && p.message === DIRECTORY_MESSAGE;
      return { kind: "fatal", path, message: isDir ? "Is a directory" : "Exec format error" };
    }
  }
  return { kind: "missing", otherClass: false, tried, searched };
}
