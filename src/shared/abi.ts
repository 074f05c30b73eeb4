/**
 * Constants of the host <-> core ABI, compiled by both asc (assembly/) and tsc (src/).
 * The core reports what it parsed as a blob of records `[u8 kind][u32 len LE][payload]`;
 * numbers are f64 LE payloads, strings are raw bytes. Edit requests and planned edits use the
 * layouts documented at each enum.
 */

/** Record kinds of the info blob (`infoPtr()`/`infoLen()`), in the order the core emits them. */
export enum InfoKind {
  Class = 1,
  Endian = 2,
  Machine = 3,
  Type = 4,
  OsAbi = 5,
  HasDynamic = 6,
  HasSectionHeaders = 7,
  Flags = 8,
  Flags1 = 9,
  SpareSlots = 10,
  Interpreter = 11,
  Soname = 12,
  Needed = 13,
  Rpath = 14,
  Runpath = 15,
  /** A `Verneed` file name; the `VerneedName` records that follow belong to it. */
  VerneedFile = 16,
  VerneedName = 17,
  VerdefName = 18,
  /** `DT_STRSZ`: bytes of the dynamic string table. */
  StrSize = 19,
  /** Bytes of the dynamic array (`PT_DYNAMIC` p_filesz). */
  DynSize = 20,
  /** Number of program headers. */
  PhdrCount = 21,
  /** How many `DT_RPATH`, `DT_RUNPATH` and `DT_SONAME` entries there are (duplicates are possible). */
  RpathCount = 22,
  RunpathCount = 23,
  SonameCount = 24,
  /** `e_entry`. */
  Entry = 25,
}

/**
 * Operation codes of the edit request blob: records `[u8 op][u32 len LE][payload]`.
 * String payloads are raw UTF-8 bytes without NUL. `ReplaceNeeded` carries
 * `[u32 oldLen][old][new]`. `SetRpath` carries `[u8 tag (0 runpath, 1 rpath)][string]`.
 * The core applies them in the fixed order of EditRequest, not in blob order.
 */
export enum EditOp {
  SetInterpreter = 1,
  SetSoname = 2,
  RemoveRpath = 3,
  SetRpath = 4,
  RemoveNeeded = 5,
  ReplaceNeeded = 6,
  AddNeeded = 7,
  NoDefaultLib = 8,
}

/** Flags for `parse(flags)`. */
export enum ParseFlag {
  /** Also collect every reference into `.dynstr` (dynsym names, versions): needed before editing strings. */
  Refs = 1,
  /**
   * Leave the symbol version tables unread (a check whose caller reads no version names: on the
   * bench tree's re-run 534 files, a sixth, needed one or two more reads for them).
   */
  NoVersions = 2,
}
