/**
 * Applies a layout decided by plan/layout.ts: points dynamic tags and headers at moved tables
 * (`applyLayout`, before the dynamic array is serialised), then stores the moved bytes, program
 * headers, section headers and ELF header fields (`writeLayout`). Old copies of moved tables stay
 * in the file untouched (nothing that is still referenced is ever overwritten).
 */
import {
  DT_GNU_HASH, DT_HASH, DT_STRSZ, DT_STRTAB, DT_SYMTAB, DT_VERDEF, DT_VERNEED, DT_VERSYM, PT_GNU_PROPERTY, PT_INTERP, PT_LOAD,
  PT_NOTE, SHT_DYNSYM, SHT_GNU_HASH, SHT_GNU_VERDEF, SHT_GNU_VERNEED, SHT_GNU_VERSYM, SHT_HASH, STT_SECTION,
} from "../elf/constants";
import { Elf, Segment } from "../parse/model";
import { addrIn, Layout, phdrIndex, Strategy } from "../plan/layout";
import { Plan } from "../plan/state";

function setTag(p: Plan, tag: u64, val: u64): void {
  const i = p.indexOf(tag);
  if (i >= 0 && unchecked(p.dyn[i]).val != val) {
    unchecked(p.dyn[i]).val = val;
    p.dynDirty = true;
  }
}

function moveSegment(s: Segment, off: u64, vaddr: u64, bytes: u64): void {
  s.off = off;
  s.vaddr = vaddr;
  s.paddr = vaddr;
  s.filesz = bytes;
  s.memsz = bytes;
}

/** Updates tags, positions and segments for the layout. */
export function applyLayout(elf: Elf, p: Plan, l: Layout): void {
  if (l.strategy == Strategy.InPlace) return;
  elf.img.grow(l.newSize);
  if (l.strBytes) {
    setTag(p, DT_STRTAB, addrIn(l, l.strOff));
    setTag(p, DT_STRSZ, l.strBytes);
  }
  if (l.dynBytes) {
    p.dynOff = l.dynOff;
    p.dynVaddr = addrIn(l, l.dynOff);
    p.dynSlots = <i32>(l.dynBytes / elf.dynEntSize);
    p.dynDirty = true;
    moveSegment(unchecked(elf.segments[elf.dynIndex]), l.dynOff, p.dynVaddr, l.dynBytes);
  }
  if (l.interpBytes) {
    moveSegment(unchecked(elf.segments[elf.interpIndex]), l.interpOff, addrIn(l, l.interpOff), l.interpBytes);
  }
  const seg = l.seg;
  if (seg !== null) {
    // The new PT_LOAD goes after the last PT_LOAD, so PT_LOADs stay sorted by address.
    let at = 0;
    for (let i = 0, n = elf.segments.length; i < n; i++) if (unchecked(elf.segments[i]).type == PT_LOAD) at = i + 1;
    const segs: Segment[] = [];
    for (let i = 0, n = elf.segments.length; i <= n; i++) {
      if (i == at) segs.push(seg);
      if (i < n) segs.push(unchecked(elf.segments[i]));
    }
    elf.segments = segs;
    if (elf.dynIndex >= at) elf.dynIndex++;
    if (elf.interpIndex >= at) elf.interpIndex++;
    const ph = phdrIndex(elf);
    const bytes = <u64>elf.segments.length * (elf.img.is64 ? 56 : 32);
    if (ph >= 0) {
      const s = unchecked(elf.segments[ph]);
      if (l.phdrOff != 0) moveSegment(s, l.phdrOff, addrIn(l, l.phdrOff), bytes);
      else {
        s.filesz = bytes;
        s.memsz = bytes;
      }
    }
  }
  if (l.blocks !== null) moveBlocks(elf, p, l);
}

/** The dynamic tag that holds the address of a section of this type, or 0. */
function tagFor(type: u32): u64 {
  if (type == SHT_GNU_HASH) return DT_GNU_HASH;
  if (type == SHT_HASH) return DT_HASH;
  if (type == SHT_DYNSYM) return DT_SYMTAB;
  if (type == SHT_GNU_VERSYM) return DT_VERSYM;
  if (type == SHT_GNU_VERDEF) return DT_VERDEF;
  if (type == SHT_GNU_VERNEED) return DT_VERNEED;
  return 0;
}

/** Points every reference to the sections of moved blocks at their new place. */
function moveBlocks(elf: Elf, p: Plan, l: Layout): void {
  const blocks = l.blocks!;
  for (let k = 0; k < blocks.length; k++) {
    const b = unchecked(blocks[k]);
    for (let i = 0; i < b.sections.length; i++) {
      const s = unchecked(b.sections[i]);
      const off = b.newOff + (s.off - b.off);
      const addr = addrIn(l, off);
      const tag = tagFor(s.type);
      if (tag != 0) {
        const j = p.indexOf(tag);
        if (j >= 0 && unchecked(p.dyn[j]).val == s.addr) setTag(p, tag, addr);
      }
      writeSection(elf, s.hdr, off, addr, s.size);
      relocateSymbols(elf, p, s.index, s.addr, addr);
    }
    for (let i = 0; i < elf.segments.length; i++) {
      const g = unchecked(elf.segments[i]);
      const kept = g.type == PT_NOTE || g.type == PT_GNU_PROPERTY || g.type == PT_INTERP;
      if (kept && g.filesz > 0 && g.off >= b.off && g.off + g.filesz <= b.off + b.size) {
        const off = b.newOff + (g.off - b.off);
        g.off = off;
        g.vaddr = addrIn(l, off);
        g.paddr = g.vaddr;
      }
    }
  }
}

function writeSection(elf: Elf, shdr: u64, off: u64, addr: u64, size: u64): void {
  if (shdr == 0) return;
  const img = elf.img;
  const is64 = img.is64;
  img.putWord(shdr + (is64 ? 16 : 12), addr);
  img.putWord(shdr + (is64 ? 24 : 16), off);
  img.putWord(shdr + (is64 ? 32 : 20), size);
}

function writeSegment(elf: Elf, o: u64, s: Segment): void {
  const img = elf.img;
  img.put32(o, s.type);
  if (img.is64) {
    img.put32(o + 4, s.flags);
    img.putWord(o + 8, s.off);
    img.putWord(o + 16, s.vaddr);
    img.putWord(o + 24, s.paddr);
    img.putWord(o + 32, s.filesz);
    img.putWord(o + 40, s.memsz);
    img.putWord(o + 48, s.align);
  } else {
    img.putWord(o + 4, s.off);
    img.putWord(o + 8, s.vaddr);
    img.putWord(o + 12, s.paddr);
    img.putWord(o + 16, s.filesz);
    img.putWord(o + 20, s.memsz);
    img.put32(o + 24, s.flags);
    img.putWord(o + 28, s.align);
  }
}

/** Stores moved tables and every header the layout changed. */
export function writeLayout(elf: Elf, p: Plan, l: Layout): void {
  const img = elf.img;
  if (l.strategy == Strategy.InPlace) return;
  if (l.strBytes) {
    const t = elf.tab!;
    const dst = img.atw(l.strOff, l.strBytes);
    if (dst) {
      memory.copy(dst, t.ptr, <usize>t.size);
      memory.fill(dst + <usize>t.size, 0, <usize>(l.strBytes - t.size));
    }
    writeSection(elf, elf.dynstrShdrOff, l.strOff, addrIn(l, l.strOff), l.strBytes);
  }
  const ni = p.newInterp;
  if (ni !== null && l.interpBytes) {
    const dst = img.atw(l.interpOff, l.interpBytes);
    if (dst) {
      memory.copy(dst, ni.ptr, <usize>ni.len);
      store<u8>(dst + <usize>ni.len, 0);
    }
    writeSection(elf, elf.interpShdrOff, l.interpOff, addrIn(l, l.interpOff), l.interpBytes);
  }
  if (l.dynBytes) writeSection(elf, elf.dynamicShdrOff, l.dynOff, p.dynVaddr, l.dynBytes);
  if (l.strBytes) relocateSymbols(elf, p, elf.dynstrShIndex, elf.dynVal(DT_STRTAB, 0), addrIn(l, l.strOff));
  if (l.dynBytes) {
    relocateSymbols(elf, p, elf.dynamicShIndex, p.origDynVaddr, p.dynVaddr);
    // Without section headers `_DYNAMIC` is found by its address alone.
    if (elf.dynamicShIndex == 0) moveDynamicSymbol(elf, elf.dynsymOff, elf.dynsymCount, p.origDynVaddr, p.dynVaddr);
  }
  if (l.interpBytes) relocateSymbols(elf, p, elf.interpShIndex, elf.interpAddr, addrIn(l, l.interpOff));
  const blocks = l.blocks;
  if (blocks !== null) {
    for (let k = 0; k < blocks.length; k++) {
      const b = unchecked(blocks[k]);
      const src = img.at(b.off, b.size);
      const dst = src ? img.atw(b.newOff, b.size) : 0;
      if (dst) memory.copy(dst, img.at(b.off, b.size), <usize>b.size); // re-read: atw may have copied the chunk
    }
  }
  const ent: u64 = img.is64 ? 56 : 32;
  const base = l.seg !== null && l.phdrOff != 0 ? l.phdrOff : elf.phoff;
  for (let i = 0, n = elf.segments.length; i < n; i++) writeSegment(elf, base + <u64>i * ent, unchecked(elf.segments[i]));
  if (l.seg !== null) {
    if (l.phdrOff != 0) img.putWord(img.is64 ? 32 : 28, l.phdrOff);
    img.put16(img.is64 ? 56 : 44, <u32>elf.segments.length);
  }
}

/**
 * Moves every symbol defined in section `index` (its section symbol, `_DYNAMIC`, `__abi_tag`...)
 * with the section: in `.dynsym` here, and in `.symtab` through the host (Plan.symFixIndex).
 */
function relocateSymbols(elf: Elf, p: Plan, index: u32, oldAddr: u64, newAddr: u64): void {
  if (index == 0 || oldAddr == newAddr) return;
  relocateIn(elf, elf.dynsymOff, elf.dynsymCount, index, newAddr - oldAddr);
  if (elf.symtabCount > 1) {
    p.symFixIndex.push(index);
    p.symFixDelta.push(newAddr - oldAddr);
  }
}

function relocateIn(elf: Elf, off: u64, count: u64, index: u32, delta: u64): void {
  if (count == 0 || index > 0xffff) return; // (no st_shndx holds a larger index)
  const img = elf.img;
  const is64 = img.is64;
  const ent: u64 = is64 ? 24 : 16;
  const base = img.at(off, count * ent);
  if (!base) return;
  // The section indices are read straight from the table (one bounds check above); only the
  // symbols of the moved section are loaded and stored through the image.
  const big = img.big;
  const shndxAt: usize = is64 ? 6 : 14;
  const want = <u16>index;
  const wanted = big ? bswap<u16>(want) : want;
  for (let i: u64 = 1; i < count; i++) {
    if (load<u16>(base + <usize>(i * ent) + shndxAt) != wanted) continue;
    const valueOff = off + i * ent + (is64 ? 8 : 4);
    img.putWord(valueOff, img.word(valueOff) + delta);
  }
}

/**
 * Points `_DYNAMIC` (any defined, non-section symbol at the old `.dynamic` address) at the moved
 * array in `.dynsym`, for a file without section headers (which has no `.symtab` either).
 */
function moveDynamicSymbol(elf: Elf, off: u64, count: u64, oldAddr: u64, newAddr: u64): void {
  if (count == 0) return;
  const img = elf.img;
  const ent: u64 = img.is64 ? 24 : 16;
  if (!img.at(off, count * ent)) return;
  for (let i: u64 = 1; i < count; i++) {
    const o = off + i * ent;
    const info = img.u8(o + (img.is64 ? 4 : 12));
    const shndx = img.u16(o + (img.is64 ? 6 : 14));
    const valueOff = o + (img.is64 ? 8 : 4);
    if ((info & 0xf) != STT_SECTION && shndx != 0 && img.word(valueOff) == oldAddr) img.putWord(valueOff, newAddr);
  }
}
