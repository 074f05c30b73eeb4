/**
 * The parsed model of one ELF file: positions (file offsets) and values, never pointers, so that
 * it stays valid when the image's chunks are re-read or copied for writing.
 */
import { Image } from "../elf/reader";

export class Segment {
  constructor(
    public type: u32,
    public flags: u32,
    public off: u64,
    public vaddr: u64,
    public paddr: u64,
    public filesz: u64,
    public memsz: u64,
    public align: u64,
  ) {}
}

/** A section header (only what the layout needs), with the file offset of the header itself. */
export class Section {
  constructor(
    public index: u32,
    public type: u32,
    public flags: u64,
    public addr: u64,
    public off: u64,
    public size: u64,
    public align: u64,
    public hdr: u64,
  ) {}
}

/**
 * Where `.dynstr` bytes are read and written while planning: the file's table (a working copy in
 * the image) or, once the plan needs more room, a private copy that will be written elsewhere.
 * `size` is the part in use by strings; `cap` the bytes allocated.
 */
export class StrTab {
  constructor(public ptr: usize, public size: u64, public cap: u64, public moved: bool) {}
}

export class DynEntry {
  constructor(public tag: u64, public val: u64) {}
}

/** A `Verneed` entry with its `Vernaux` entries, kept whole so the table can be rewritten. */
export class Verneed {
  names: u32[] = []; // vna_name of each Vernaux
  hashes: u32[] = []; // vna_hash
  flags: u32[] = []; // vna_flags
  others: u32[] = []; // vna_other: the version index symbols use in DT_VERSYM
  constructor(public fileFieldOff: u64, public file: u32) {}
}

export class Elf {
  // ELF header
  osabi: u32 = 0;
  type: u32 = 0;
  machine: u32 = 0;
  /** `e_entry` (0: none, as in most shared libraries). */
  entry: u64 = 0;
  phoff: u64 = 0;
  shoff: u64 = 0;
  phnum: u32 = 0;
  shnum: u32 = 0;
  shentsize: u32 = 0;
  hasShdrs: bool = false;

  /** Where the section header table ends in the file; 0 when there is none. */
  shTableEnd(): u64 {
    return this.shoff != 0 && this.shnum != 0 ? this.shoff + <u64>this.shnum * <u64>this.shentsize : 0;
  }

  segments: Segment[] = [];
  loads: Segment[] = [];
  interpIndex: i32 = -1; // index in segments of PT_INTERP
  dynIndex: i32 = -1; // index in segments of PT_DYNAMIC

  // Dynamic array: entries before the terminator, and the slots the segment holds.
  dynOff: u64 = 0;
  dynEntSize: u64 = 0;
  dyn: DynEntry[] = [];
  dynSpare: u32 = 0; // DT_NULL slots after the terminator

  // Dynamic string table
  strOff: u64 = 0;
  strSize: u64 = 0;
  hasStrtab: bool = false;

  verneeds: Verneed[] = [];
  verneedOff: u64 = 0;
  /** Whether the Verneed table is laid out as linkers write it: each entry followed by its aux entries. */
  /** File offsets of every Verneed and Vernaux entry read (16 bytes each), in chain order. */
  verneedEntries: u64[] = [];
  /** File offset of the `sh_info` field of the `SHT_GNU_verneed` section header, or 0. */
  verneedShInfoOff: u64 = 0;
  /** `DT_VERSYM` table offset (valid when versymCount > 0). */
  versymOff: u64 = 0;
  versymCount: u64 = 0;
  verdefNames: u32[] = []; // first vda_name of each Verdef
  verdefAllNames: u32[] = []; // every vda_name

  /** Offsets into `.dynstr` referenced by dynamic symbols (only with ParseFlag.Refs). */
  symNames: u32[] = [];
  /** Whether bytes of `.dynstr` that no known reference uses may be reused. */
  freeSpaceTrusted: bool = true;
  /** Set while planning: the string table strings are read from and placed into. */
  tab: StrTab | null = null;

  // File offsets of section header fields updated when a table moves (0 = no such section).
  dynstrShdrOff: u64 = 0;
  dynamicShdrOff: u64 = 0;
  interpShdrOff: u64 = 0;
  dynstrShIndex: u32 = 0;
  dynamicShIndex: u32 = 0;
  interpShIndex: u32 = 0;
  /** Address of `PT_INTERP`'s string before any move. */
  interpAddr: u64 = 0;
  /** `.symtab` (static symbols): offset and entry count; never loaded (the host moves its symbols). */
  symtabOff: u64 = 0;
  symtabCount: u64 = 0;
  /** `.dynsym` table offset and entry count (with ParseFlag.Refs). */
  dynsymOff: u64 = 0;
  dynsymCount: u64 = 0;
  /** The largest `st_size` of a dynamic symbol (keeps eu-elflint's relocation heuristic quiet). */
  maxSymSize: u64 = 0;
  shdrsLoaded: bool = false;
  /** `[offset, size]` pairs of every section with file bytes (when section headers were read). */
  secRanges: u64[] = [];
  /** Every section header (when section headers were read). */
  sections: Section[] = [];
  /** Index in `loads` of the segment holding `.dynstr` (its slack bytes were loaded), or -1. */
  slackLoad: i32 = -1;

  constructor(public img: Image) {}

  /** Value of the last entry with `tag` (glibc keeps the last), or `dflt`. */
  dynVal(tag: u64, dflt: u64): u64 {
    let v = dflt;
    for (let i = 0, n = this.dyn.length; i < n; i++) {
      const e = unchecked(this.dyn[i]);
      if (e.tag == tag) v = e.val;
    }
    return v;
  }

  hasTag(tag: u64): bool {
    for (let i = 0, n = this.dyn.length; i < n; i++) if (unchecked(this.dyn[i]).tag == tag) return true;
    return false;
  }

  /** Maps a virtual address range to a file offset through the `PT_LOAD` holding it; u64.MAX if none. */
  offFromAddr(addr: u64, len: u64): u64 {
    for (let i = 0, n = this.loads.length; i < n; i++) {
      const s = unchecked(this.loads[i]);
      if (addr >= s.vaddr && addr - s.vaddr <= s.filesz && len <= s.filesz - (addr - s.vaddr)) {
        return s.off + (addr - s.vaddr);
      }
    }
    return u64.MAX_VALUE;
  }

  /** Size of the string table as currently planned. */
  get strTableSize(): u64 {
    const t = this.tab;
    return t !== null ? t.size : this.strSize;
  }

  /** Length of the NUL-terminated string at `.dynstr` offset `idx`, or -1 (status set) when invalid. */
  strLen(idx: u64): i64 {
    const size = this.strTableSize;
    if (!this.hasStrtab || idx >= size) return -1;
    const base = this.strPtr(0);
    if (!base) return -1;
    const end = base + <usize>size;
    let p = base + <usize>idx;
    const start = p;
    while (p < end && load<u8>(p) != 0) p++;
    if (p == end) return -1;
    return <i64>(p - start);
  }

  /** Address in the image of `.dynstr` offset `idx` (the table must be present). */
  strPtr(idx: u64): usize {
    const t = this.tab;
    if (t !== null) return t.ptr + <usize>idx;
    const base = this.img.at(this.strOff, this.strSize);
    return base ? base + <usize>idx : 0;
  }
}
