/**
 * Plain-data records exchanged between the core engine, the CLI and (later) the worker pool.
 * Everything here is structured-clone safe: no classes, no functions, no typed arrays.
 */
import type { ErrorRecord } from "../errors.js";

/** What `elfpatch show` reports for one ELF file. Field docs describe the ELF source of each value. */
export interface ElfInfo {
  path: string;
  /** `EI_CLASS`: 32 for ELFCLASS32, 64 for ELFCLASS64. */
  class: 32 | 64;
  /** `EI_DATA`: byte order of every multi-byte field in the file. */
  endian: "little" | "big";
  /** `e_machine`: the number, and a short name (`x86_64`, `aarch64`, `ppc64`…; `EM_<n>` when unknown). */
  machine: { number: number; name: string };
  /** `e_type`: `DYN` (shared object or PIE), `EXEC`, `REL`, `CORE`, `NONE`, or `0x<hex>`. */
  type: string;
  /** `e_entry`: the entry point address (0 when there is none, as in most shared libraries). */
  entry: number;
  /** `EI_OSABI`: the number and a short name (`SYSV`, `GNU`, `FreeBSD`…). */
  osabi: { number: number; name: string };
  /** The `PT_INTERP` string (program interpreter), or null when there is no `PT_INTERP`. */
  interpreter: string | null;
  /** `DT_SONAME`, or null. */
  soname: string | null;
  /** `DT_NEEDED` entries, in `.dynamic` order (the loader's breadth-first order). */
  needed: string[];
  /** `DT_RPATH` string (raw, tokens unexpanded), or null. When several exist, the last one (as glibc). */
  rpath: string | null;
  /** `DT_RUNPATH` string (raw), or null. When present the loader ignores `DT_RPATH`. */
  runpath: string | null;
  /** Names of the `DT_FLAGS` bits set (`ORIGIN`, `SYMBOLIC`, `TEXTREL`, `BIND_NOW`, `STATIC_TLS`). */
  flags: string[];
  /** Names of the `DT_FLAGS_1` bits set, readelf spelling (`NOW`, `NODEFLIB`, `PIE`, `ORIGIN`…). */
  flags1: string[];
  /** Whether the file has a `PT_DYNAMIC` segment at all (static executables and objects do not). */
  hasDynamic: boolean;
  /** Unused `DT_NULL` slots after the terminating one: room for new tags without moving `.dynamic`. */
  spareDynamicSlots: number;
  /** `DT_STRSZ`: size of the dynamic string table in bytes (0 without one). */
  dynstrSize: number;
  /** Size of the dynamic array (`PT_DYNAMIC`) in bytes (0 without one). */
  dynamicSize: number;
  /** Number of program headers. */
  programHeaders: number;
  /** Number of `DT_RPATH`, `DT_RUNPATH` and `DT_SONAME` entries (more than one is possible, rarely). */
  tagCounts: { rpath: number; runpath: number; soname: number };
  /** Symbol version needs (`DT_VERNEED`): file name -> version names, both in table order. */
  versionNeeds: Record<string, string[]>;
  /** Symbol version definitions (`DT_VERDEF`): the first name of each entry, in table order. */
  versionDefs: string[];
  /** Whether the file has section headers that the core could read (stripped files may not). */
  hasSectionHeaders: boolean;
  /** File size in bytes. */
  size: number;
}

/** An error record for a file that could not be read or parsed (see `src/errors.ts` for codes). */
export interface FileError {
  path: string;
  error: ErrorRecord;
}

/** One byte-exact write: `bytes` at file offset `offset`. */
export interface Edit {
  offset: number;
  bytes: Uint8Array;
  /** The file's original bytes of the same range (absent past the original end, or when unknown). */
  orig?: Uint8Array;
}

/** Original bytes of a run the edits change (what an undo journal must restore). */
export interface UndoRun {
  offset: number;
  data: Uint8Array;
}

/** The tag to use when a run path is set: `DT_RUNPATH` (patchelf's default) or `DT_RPATH` (forced). */
export type RunpathTag = "runpath" | "rpath";

/**
 * The edits one core call plans, applied in this fixed order (the order of the fields):
 * 1. `interpreter`  2. `soname`  3. run path (`removeRpath`, then `setRpath` with `rpathTag`)
 * 4. `removeNeeded`  5. `replaceNeeded`  6. `addNeeded`  7. `noDefaultLib`.
 * A field left undefined means "leave it as it is".
 */
export interface EditRequest {
  interpreter?: string;
  soname?: string;
  /** Remove `DT_RPATH` and `DT_RUNPATH`. Applied before `setRpath`. */
  removeRpath?: boolean;
  /** Set the run path string. The tag is `rpathTag` (default `runpath`); the other tag is converted. */
  setRpath?: string;
  rpathTag?: RunpathTag;
  removeNeeded?: string[];
  /** Pairs `[old, new]`. */
  replaceNeeded?: [string, string][];
  /** Names added as new `DT_NEEDED` entries, before the existing ones (as patchelf), if not present. */
  addNeeded?: string[];
  /** Set `DF_1_NODEFLIB` in `DT_FLAGS_1`. */
  noDefaultLib?: boolean;
}

/**
 * How planned edits fit, cheapest first:
 * - `in-place`: in the bytes the file already has for them (no table moved);
 * - `slack`: a grown table moved into padding after its segment (the file does not grow);
 * - `tail`: the last segment (one elfpatch or patchelf appended before) extended at the end;
 * - `new-segment`: one new `PT_LOAD` appended at the end of the file.
 */
export type Strategy = "in-place" | "slack" | "tail" | "new-segment";

/** The result of planning edits on one file. */
export interface PlanResult {
  before: ElfInfo;
  /** Byte-exact writes, sorted by offset, non-overlapping. Empty when nothing changes. */
  edits: Edit[];
  /** The size of the file after the edits (equal to the old size unless it grows). */
  newSize: number;
  strategy: Strategy;
  /** Bytes of sections moved out of the way of a growing program header table (part of the growth). */
  movedBytes: number;
}
