/**
 * Decides where tables that outgrew their place go, once, after every edit is planned. Reads the
 * plan; changes only segment values and plan positions, never output bytes. Cheapest first:
 *   1. Slack: file and address-space padding right after the segment holding `.dynstr`, when
 *      nothing (section, segment, non-zero byte) uses it: the segment is extended, the file does
 *      not grow.
 *   2. Tail: the last segment ends at the end of the file (a table elfpatch or patchelf already
 *      moved there): it is extended in place at the end of the file, never duplicated.
 *   3. New: one `PT_LOAD` appended at the end of the file, holding the program header table (one
 *      entry longer) and the moved tables, at an address above every segment with
 *      `(vaddr - offset) % align == 0` for the largest alignment, without padding the file to it.
 * Moved tables keep some headroom (string bytes, spare `DT_NULL` slots) so later edits fit in place.
 */
import { Status } from "../../src/shared/status";
import { EM_386, EM_S390, EM_X86_64, PF_R, PF_W, PT_LOAD, PT_PHDR } from "../elf/constants";
import { Elf, Segment } from "../parse/model";
import { Block, planPhdrRoom } from "./phdrs";
import { Plan } from "./state";
import { STR_HEADROOM } from "./strtab";

/** Most bytes of sections moved out of the way of a growing program header table. */
const MAX_MOVED: u64 = 256 << 10;

/**
 * Bytes after everything the headers describe that a new segment may follow: patchelf leaves one
 * byte after its segment, linkers none. More is a payload (PyInstaller's archive, a self-extracting
 * program's data), found by reading the end of the file, so a new segment must not go after it.
 */
const TRAILING_SLACK: u64 = 64;
/** Bytes read at each end of trailing data to tell zero padding from a payload. */
const TRAILING_PROBE: u64 = 4096;

/** Spare `DT_NULL` slots given to a moved dynamic array. */
export const DYN_HEADROOM: i32 = 8;

export enum Strategy {
  InPlace = 0,
  Slack = 1,
  Tail = 2,
  NewSegment = 3,
}

/** The decided layout: what moves where (file offsets; 0 = not moved). */
export class Layout {
  strategy: Strategy = Strategy.InPlace;
  newSize: u64 = 0;
  strOff: u64 = 0;
  strBytes: u64 = 0;
  dynOff: u64 = 0;
  dynBytes: u64 = 0;
  interpOff: u64 = 0;
  interpBytes: u64 = 0;
  /** The program header table moves to `phdrOff` with one more PT_LOAD (`seg`); 0: it grows in place. */
  phdrOff: u64 = 0;
  /** Sections moved out of the way of the table growing in place (into the new segment). */
  blocks: Block[] | null = null;
  /** Bytes of those sections. */
  movedBytes: u64 = 0;
  seg: Segment | null = null;
  /** The segment that holds the moved tables (extended or new). */
  home: Segment | null = null;
}

function align(v: u64, a: u64): u64 {
  return (v + a - 1) & ~(a - 1);
}

/** The granularity of mappings: the largest page size the machine's ABI allows. */
function pageSize(elf: Elf): u64 {
  const m = elf.machine;
  return m == EM_386 || m == EM_X86_64 || m == EM_S390 ? 4096 : 65536;
}

/** Whether any section or the section header table has bytes in `[start, end)`. */
function fileRangeUsed(elf: Elf, start: u64, end: u64): bool {
  for (let i = 0, n = elf.secRanges.length; i < n; i += 2) {
    const o = unchecked(elf.secRanges[i]);
    const z = unchecked(elf.secRanges[i + 1]);
    if (o < end && o + z > start) return true;
  }
  const sh = elf.shTableEnd();
  return sh != 0 && elf.shoff < end && sh > start;
}

/** Whether any PT_LOAD other than `self` maps pages in `[start, end)` of the address space. */
function addrRangeUsed(elf: Elf, self: Segment | null, start: u64, end: u64): bool {
  const pg = pageSize(elf);
  for (let i = 0, n = elf.loads.length; i < n; i++) {
    const t = unchecked(elf.loads[i]);
    if (t === self) continue;
    const ts = t.vaddr & ~(pg - 1);
    const te = align(t.vaddr + t.memsz, pg);
    if (ts < end && te > start) return true;
  }
  return false;
}

/** Lays out `[phdrs][interp][dynamic][dynstr]` from `base` (8-aligned items); returns the end. */
function place(l: Layout, base: u64, phdrBytes: u64): u64 {
  let at = base;
  if (phdrBytes) {
    l.phdrOff = at;
    at = align(at + phdrBytes, 8);
  }
  if (l.interpBytes) {
    l.interpOff = at;
    at = align(at + l.interpBytes, 8);
  }
  if (l.dynBytes) {
    l.dynOff = at;
    at = align(at + l.dynBytes, 8);
  }
  if (l.strBytes) {
    l.strOff = at;
    at += l.strBytes;
  }
  return at;
}

function trySlack(elf: Elf, l: Layout): bool {
  if (elf.slackLoad < 0) return false;
  const s = unchecked(elf.loads[elf.slackLoad]);
  if (s.memsz != s.filesz || (l.dynBytes && (s.flags & PF_W) == 0)) return false;
  const gap = s.off + s.filesz;
  const end = place(l, align(gap, 8), 0);
  if (end > elf.img.size || fileRangeUsed(elf, gap, end)) return false;
  for (let i = 0, n = elf.segments.length; i < n; i++) {
    const t = unchecked(elf.segments[i]);
    if (t !== s && t.filesz > 0 && t.off < end && t.off + t.filesz > gap) return false;
  }
  const bytes = elf.img.at(gap, end - gap);
  if (!bytes) return false; // beyond the slack the core loaded
  for (let i: u64 = 0; i < end - gap; i++) if (load<u8>(bytes + <usize>i) != 0) return false;
  if (addrRangeUsed(elf, s, s.vaddr + s.memsz, s.vaddr + (end - s.off))) return false;
  s.filesz = end - s.off;
  s.memsz = s.filesz;
  l.home = s;
  l.strategy = Strategy.Slack;
  l.newSize = elf.img.size;
  return true;
}

/** The PT_LOAD with the highest address, or null. */
function lastLoad(elf: Elf): Segment | null {
  let best: Segment | null = null;
  for (let i = 0, n = elf.loads.length; i < n; i++) {
    const t = unchecked(elf.loads[i]);
    if (best === null || t.vaddr > best.vaddr) best = t;
  }
  return best;
}

function tryTail(elf: Elf, l: Layout): bool {
  const s = lastLoad(elf);
  const size = elf.img.size;
  if (s === null || s.memsz != s.filesz || s.filesz == 0) return false;
  const end0 = s.off + s.filesz;
  // patchelf leaves one byte after its segment; allow a few unused bytes, nothing more.
  if (end0 > size || size - end0 > 64 || fileRangeUsed(elf, end0, size)) return false;
  const end = place(l, align(size, 8), 0);
  s.filesz = end - s.off;
  s.memsz = s.filesz;
  if (l.dynBytes) s.flags |= PF_W;
  l.home = s;
  l.strategy = Strategy.Tail;
  l.newSize = end;
  return true;
}

/** The end of everything the headers describe: the ELF header, both tables, segments, sections. */
function contentEnd(elf: Elf): u64 {
  const img = elf.img;
  let end: u64 = img.is64 ? 64 : 52;
  const ph = elf.phoff + <u64>elf.segments.length * <u64>(img.is64 ? 56 : 32);
  if (elf.phoff != 0 && ph > end) end = ph;
  for (let i = 0, n = elf.segments.length; i < n; i++) {
    const g = unchecked(elf.segments[i]);
    if (g.filesz > 0 && g.off + g.filesz > end) end = g.off + g.filesz;
  }
  for (let i = 0, n = elf.secRanges.length; i < n; i += 2) {
    const e = unchecked(elf.secRanges[i]) + unchecked(elf.secRanges[i + 1]);
    if (e > end) end = e;
  }
  const sh = elf.shTableEnd();
  return sh > end ? sh : end;
}

/** `TrailingData` when non-zero bytes follow the file's contents (beyond TRAILING_SLACK). */
function checkTrailing(elf: Elf): Status {
  const img = elf.img;
  const end = contentEnd(elf);
  if (end >= img.size || img.size - end <= TRAILING_SLACK) return Status.Ok;
  const n = img.size - end;
  const k = n < TRAILING_PROBE ? n : TRAILING_PROBE;
  const head = img.at(end, k);
  const tail = img.at(img.size - k, k);
  if (!head || !tail) return img.ok ? Status.Truncated : img.status;
  for (let i: u64 = 0; i < k; i++) {
    if (load<u8>(head + <usize>i) != 0 || load<u8>(tail + <usize>i) != 0) return Status.TrailingData;
  }
  return Status.Ok;
}

function newSegment(elf: Elf, l: Layout): Status {
  const img = elf.img;
  // The new segment goes at the end of the file: not after a payload that is read from there.
  const trailing = checkTrailing(elf);
  if (trailing != Status.Ok) return trailing;
  const ent: u64 = img.is64 ? 56 : 32;
  const n = elf.segments.length + 1;
  if (n >= 0xffff) return Status.TooLarge;
  let maxAlign = pageSize(elf);
  let high: u64 = 0;
  for (let i = 0, m = elf.loads.length; i < m; i++) {
    const t = unchecked(elf.loads[i]);
    if (t.align > maxAlign && t.align <= (1 << 30) && (t.align & (t.align - 1)) == 0) maxAlign = t.align;
    if (t.vaddr + t.memsz > high) high = t.vaddr + t.memsz;
  }
  const off = align(img.size, 16);
  // Prefer growing the table in place (what strip and objcopy expect), moving what is in its way.
  let blocks = planPhdrRoom(elf, l.strBytes > 0, l.interpBytes > 0);
  let moved: u64 = 0;
  if (blocks !== null) for (let i = 0; i < blocks.length; i++) moved += unchecked(blocks[i]).size;
  // Moving big tables (a large .dynsym) costs more than it saves: then the table itself moves.
  if (moved > MAX_MOVED) blocks = null;
  let end: u64;
  if (blocks !== null) {
    l.movedBytes = moved;
    let at = off;
    for (let i = 0; i < blocks.length; i++) {
      const b = unchecked(blocks[i]);
      at = align(at, b.align);
      b.newOff = at;
      at += b.size;
    }
    end = place(l, align(at, 8), 0);
    l.blocks = blocks;
  } else {
    end = place(l, off, <u64>n * ent);
  }
  // The lowest address above every segment that is congruent to the offset modulo maxAlign.
  // A gap of the largest symbol size keeps eu-elflint from reading "relocation offset + symbol
  // size" as reaching into the new read-only segment (it costs address space, not file bytes).
  const gap = elf.maxSymSize < (1 << 30) ? elf.maxSymSize : 0;
  const floor = align(high + gap, pageSize(elf));
  let vaddr = (floor & ~(maxAlign - 1)) + (off & (maxAlign - 1));
  if (vaddr < floor) vaddr += maxAlign;
  if (vaddr < high) return Status.TooLarge; // address space wrapped
  const flags = PF_R | (l.dynBytes ? PF_W : 0);
  const seg = new Segment(PT_LOAD, flags, off, vaddr, vaddr, end - off, end - off, maxAlign);
  l.seg = seg;
  l.home = seg;
  l.strategy = Strategy.NewSegment;
  l.newSize = end;
  return Status.Ok;
}

/** Decides the layout for `p`; `Strategy.InPlace` when nothing has to move. */
export function planLayout(elf: Elf, p: Plan, l: Layout): Status {
  const t = elf.tab;
  if (t !== null && t.moved) l.strBytes = t.size + STR_HEADROOM;
  if (p.dyn.length > p.capacity) l.dynBytes = <u64>(p.dyn.length + 1 + DYN_HEADROOM) * elf.dynEntSize;
  const ni = p.newInterp;
  if (ni !== null) l.interpBytes = ni.len + 1;
  l.newSize = elf.img.size;
  if (!l.strBytes && !l.dynBytes && !l.interpBytes) return Status.Ok;
  if (!p.allowGrowth) return Status.NoRoom;
  if (elf.hasShdrs && !elf.shdrsLoaded) return Status.BadSectionHeaders;
  if (trySlack(elf, l)) return Status.Ok;
  resetPlaces(l);
  if (tryTail(elf, l)) return Status.Ok;
  resetPlaces(l);
  return newSegment(elf, l);
}

function resetPlaces(l: Layout): void {
  l.phdrOff = 0;
  l.interpOff = 0;
  l.dynOff = 0;
  l.strOff = 0;
}

/** The address of file offset `off` inside the layout's home segment. */
export function addrIn(l: Layout, off: u64): u64 {
  const h = l.home!;
  return h.vaddr + (off - h.off);
}

/** Whether a PT_PHDR exists (it then follows a moved program header table). */
export function phdrIndex(elf: Elf): i32 {
  for (let i = 0, n = elf.segments.length; i < n; i++) if (unchecked(elf.segments[i]).type == PT_PHDR) return i;
  return -1;
}
