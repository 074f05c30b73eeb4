/**
 * Collects every reference into `.dynstr` that is not a dynamic entry: dynamic symbol names
 * (`st_name`), found through the section headers or, in stripped files, `DT_HASH`/`DT_GNU_HASH`.
 * Also decides whether unreferenced `.dynstr` bytes may be reused: only when no section we do not
 * model links to `.dynstr` and the machine has no string-valued processor tags (MIPS).
 */
import { Status } from "../../src/shared/status";
import {
  DT_GNU_HASH, DT_HASH, DT_SYMENT, DT_SYMTAB, DT_VERSYM, EM_MIPS, SHT_DYNAMIC, SHT_DYNSYM, SHT_GNU_VERDEF,
  SHT_GNU_VERNEED, SHT_HASH, SHT_GNU_HASH, SHT_GNU_VERSYM, SHT_NOBITS, SHT_PROGBITS, SHT_STRTAB, SHT_SYMTAB,
} from "../elf/constants";
import { Elf, Section } from "./model";

/** Most dynamic symbols accepted (libLLVM has ~100k). */
const MAX_SYMS: u64 = 1 << 24;

export function parseSymbolRefs(elf: Elf): void {
  const img = elf.img;
  if (elf.machine == EM_MIPS) elf.freeSpaceTrusted = false;
  const symAddr = elf.dynVal(DT_SYMTAB, u64.MAX_VALUE);
  const ent = elf.dynVal(DT_SYMENT, img.is64 ? 24 : 16);
  let count: u64 = u64.MAX_VALUE;
  if (elf.hasShdrs) count = countFromSections(elf, symAddr);
  if (!img.ok) return;
  loadSlack(elf);
  if (!img.ok) return;
  if (symAddr == u64.MAX_VALUE) return;
  if (ent != (img.is64 ? 24 : 16)) {
    img.fail(Status.BadSymbolTable);
    return;
  }
  if (count == u64.MAX_VALUE) count = countFromHash(elf);
  if (!img.ok) return;
  if (count > MAX_SYMS) {
    img.fail(Status.TooLarge);
    return;
  }
  if (count == 0) return;
  const off = elf.offFromAddr(symAddr, count * ent);
  if (off == u64.MAX_VALUE) {
    img.fail(Status.BadSymbolTable);
    return;
  }
  const base = img.at(off, count * ent);
  if (!base) return;
  // One bounds check for the whole table, then plain loads (st_name, and st_size for the largest).
  const n = <i32>count;
  const names = new Array<u32>(n);
  const big = img.big;
  let maxSize: u64 = 0;
  for (let i = 0; i < n; i++) {
    const p = base + <usize>i * <usize>ent;
    const name = load<u32>(p);
    unchecked((names[i] = big ? bswap<u32>(name) : name));
    let size: u64;
    if (img.is64) {
      const v = load<u64>(p + 16);
      size = big ? bswap<u64>(v) : v;
    } else {
      const v = load<u32>(p + 8);
      size = <u64>(big ? bswap<u32>(v) : v);
    }
    if (size > maxSize) maxSize = size;
  }
  elf.symNames = names;
  if (maxSize > elf.maxSymSize) elf.maxSymSize = maxSize;
  elf.dynsymOff = off;
  elf.dynsymCount = count;
  parseVersym(elf, count);
}

/** Locates `DT_VERSYM` (one u16 version index per dynamic symbol), needed when Verneed entries go. */
function parseVersym(elf: Elf, count: u64): void {
  const addr = elf.dynVal(DT_VERSYM, u64.MAX_VALUE);
  if (addr == u64.MAX_VALUE) return;
  const off = elf.offFromAddr(addr, count * 2);
  if (off == u64.MAX_VALUE) {
    elf.img.fail(Status.BadVersionTable);
    return;
  }
  if (!elf.img.at(off, count * 2)) return;
  elf.versymOff = off;
  elf.versymCount = count;
}

/** A u32 field at `p` (file byte order). */
// @ts-ignore: decorator
@inline function ld32(p: usize, big: bool): u32 {
  const v = load<u32>(p);
  return big ? bswap<u32>(v) : v;
}

/** A class-sized field at `p` (file byte order). */
// @ts-ignore: decorator
@inline function ldw(p: usize, big: bool, is64: bool): u64 {
  if (is64) {
    const v = load<u64>(p);
    return big ? bswap<u64>(v) : v;
  }
  return <u64>ld32(p, big);
}

/** Finds `.dynsym` in the section headers; also marks free space untrusted if needed. */
function countFromSections(elf: Elf, symAddr: u64): u64 {
  const img = elf.img;
  const is64 = img.is64;
  const big = img.big;
  const size: u64 = is64 ? 64 : 40;
  // One bounds check for the whole table, then plain loads.
  const base = img.at(elf.shoff, <u64>elf.shnum * size);
  if (!base) return u64.MAX_VALUE;
  let count: u64 = u64.MAX_VALUE;
  let strIndex: i64 = -1;
  elf.shdrsLoaded = true;
  const interpOff = elf.interpIndex >= 0 ? unchecked(elf.segments[elf.interpIndex]).off : u64.MAX_VALUE;
  for (let i: u32 = 0; i < elf.shnum; i++) {
    const o = elf.shoff + <u64>i * size;
    const h = base + <usize>(<u64>i * size);
    const type = ld32(h + 4, big);
    const off = ldw(h + (is64 ? 24 : 16), big, is64);
    const secSize = ldw(h + (is64 ? 32 : 20), big, is64);
    const addr = ldw(h + (is64 ? 16 : 12), big, is64);
    if (type != SHT_NOBITS && type != 0 && secSize > 0) {
      elf.secRanges.push(off);
      elf.secRanges.push(secSize);
    }
    elf.sections.push(new Section(
      i, type, ldw(h + 8, big, is64), addr, off, secSize, ldw(h + (is64 ? 48 : 32), big, is64), o,
    ));
    if (type == SHT_STRTAB && off == elf.strOff && elf.hasStrtab) {
      strIndex = i;
      elf.dynstrShdrOff = o;
      elf.dynstrShIndex = i;
    }
    if (type == SHT_DYNAMIC && off == elf.dynOff && elf.dynIndex >= 0) {
      elf.dynamicShdrOff = o;
      elf.dynamicShIndex = i;
    }
    if (type == SHT_PROGBITS && off == interpOff) {
      elf.interpShdrOff = o;
      elf.interpShIndex = i;
    }
    if (type == SHT_SYMTAB && elf.symtabOff == 0) {
      const entsize = ldw(h + (is64 ? 56 : 36), big, is64);
      if (entsize == (is64 ? 24 : 16) && img.inFile(off, secSize)) {
        // Where it is, for the host, which moves its symbols (the core never loads it).
        elf.symtabOff = off;
        elf.symtabCount = secSize / entsize;
      }
    }
    if (type == SHT_GNU_VERNEED && elf.verneeds.length > 0 && off == elf.verneedOff) {
      elf.verneedShInfoOff = o + (is64 ? 44 : 28);
    }
    if (type == SHT_DYNSYM && addr == symAddr) {
      const entsize = ldw(h + (is64 ? 56 : 36), big, is64);
      if (entsize != 0) count = secSize / entsize;
    }
  }
  if (strIndex >= 0) {
    for (let i: u32 = 0; i < elf.shnum; i++) {
      const h = base + <usize>(<u64>i * size);
      const type = ld32(h + 4, big);
      const link = ld32(h + (is64 ? 40 : 24), big);
      if (<i64>link != strIndex) continue;
      if (type != SHT_DYNSYM && type != SHT_DYNAMIC && type != SHT_GNU_VERDEF && type != SHT_GNU_VERNEED &&
        type != SHT_HASH && type != SHT_GNU_HASH && type != SHT_GNU_VERSYM) {
        elf.freeSpaceTrusted = false;
      }
    }
  }
  return count;
}

/** Counts symbols from `DT_HASH` (nchain) or by walking the `DT_GNU_HASH` chains. */
function countFromHash(elf: Elf): u64 {
  const img = elf.img;
  const hash = elf.dynVal(DT_HASH, u64.MAX_VALUE);
  if (hash != u64.MAX_VALUE) {
    const o = elf.offFromAddr(hash, 8);
    if (o == u64.MAX_VALUE) {
      img.fail(Status.BadSymbolTable);
      return 0;
    }
    return <u64>img.u32(o + 4);
  }
  const gnu = elf.dynVal(DT_GNU_HASH, u64.MAX_VALUE);
  if (gnu == u64.MAX_VALUE) {
    // No way to size the table: refuse to reuse .dynstr bytes rather than guess.
    elf.freeSpaceTrusted = false;
    return 0;
  }
  const o = elf.offFromAddr(gnu, 16);
  if (o == u64.MAX_VALUE) {
    img.fail(Status.BadSymbolTable);
    return 0;
  }
  const nbuckets = <u64>img.u32(o);
  const symoffset = <u64>img.u32(o + 4);
  const bloomSize = <u64>img.u32(o + 8);
  const buckets = o + 16 + bloomSize * (img.is64 ? 8 : 4);
  if (nbuckets > MAX_SYMS || bloomSize > MAX_SYMS || !img.at(buckets, nbuckets * 4)) return 0;
  let max: u64 = 0;
  for (let i: u64 = 0; i < nbuckets; i++) {
    const b = <u64>img.u32(buckets + i * 4);
    if (b > max) max = b;
  }
  if (max < symoffset) return symoffset;
  const chains = buckets + nbuckets * 4;
  let idx = max;
  while (img.ok) {
    if (idx - symoffset > MAX_SYMS) {
      img.fail(Status.TooLarge);
      return 0;
    }
    const v = img.u32(chains + (idx - symoffset) * 4);
    if (!img.ok) return 0;
    if (v & 1) return idx + 1;
    idx++;
  }
  return 0;
}

/** Most bytes of slack after `.dynstr`'s segment considered for a moved table. */
const MAX_SLACK: u64 = 1 << 16;

/**
 * Loads the file bytes between the end of the segment holding `.dynstr` and whatever comes next
 * (another segment, or the end of the file): the planner may place a grown table there.
 */
function loadSlack(elf: Elf): void {
  if (!elf.hasStrtab) return;
  const img = elf.img;
  for (let i = 0, n = elf.loads.length; i < n; i++) {
    const s = unchecked(elf.loads[i]);
    if (elf.strOff < s.off || elf.strOff >= s.off + s.filesz) continue;
    const start = s.off + s.filesz;
    let end = img.size;
    for (let j = 0, m = elf.segments.length; j < m; j++) {
      const t = unchecked(elf.segments[j]);
      if (t.filesz > 0 && t.off >= start && t.off < end) end = t.off;
    }
    if (end > start + MAX_SLACK) end = start + MAX_SLACK;
    if (end > start) img.at(start, end - start);
    elf.slackLoad = i;
    return;
  }
}
