/**
 * Room for one more program header without moving the table. BFD's strip and objcopy expect the
 * program header table right after the ELF header; a table moved to the end of the file comes out
 * of them broken. So when a new `PT_LOAD` needs an entry, the sections in the way of the grown
 * table are moved instead, into the new segment: only kinds whose every reference the core updates
 * (notes through `PT_NOTE`/`PT_GNU_PROPERTY`, `.interp` through `PT_INTERP`, hash, symbol and
 * version tables through their dynamic tags). A note segment moves as one block, so its notes keep
 * their relative layout. Returns null when something else is in the way (the caller then moves the
 * table itself).
 */
import {
  PT_GNU_PROPERTY, PT_INTERP, PT_LOAD, PT_NOTE, PT_PHDR, SHT_DYNSYM, SHT_GNU_HASH, SHT_GNU_VERDEF, SHT_GNU_VERNEED,
  SHT_GNU_VERSYM, SHT_HASH, SHT_NOBITS, SHT_NOTE, SHT_PROGBITS,
} from "../elf/constants";
import { Elf, Section } from "../parse/model";

/** A byte range moved as a whole: one section, or all sections of one note segment. */
export class Block {
  sections: Section[] = [];
  newOff: u64 = 0;
  constructor(public off: u64, public size: u64, public align: u64) {}
}

function isInterp(elf: Elf, s: Section): bool {
  return s.type == SHT_PROGBITS && elf.interpIndex >= 0 && s.off == unchecked(elf.segments[elf.interpIndex]).off;
}

function movable(elf: Elf, s: Section, moving: bool): bool {
  const t = s.type;
  if (t == SHT_NOTE || t == SHT_GNU_HASH || t == SHT_HASH || t == SHT_DYNSYM) return true;
  if (t == SHT_GNU_VERSYM || t == SHT_GNU_VERDEF || t == SHT_GNU_VERNEED) return true;
  if (isInterp(elf, s)) return true;
  // .dynstr can be in the way only when the layout moves it anyway.
  return moving && s.index == elf.dynstrShIndex && s.index != 0;
}

/** The note segment that fully holds section `s`, or null. */
function noteSegment(elf: Elf, s: Section): i32 {
  for (let i = 0, n = elf.segments.length; i < n; i++) {
    const g = unchecked(elf.segments[i]);
    if (g.type == PT_NOTE && s.off >= g.off && s.off + s.size <= g.off + g.filesz) return i;
  }
  return -1;
}

function blockHas(blocks: Block[], off: u64): bool {
  for (let i = 0; i < blocks.length; i++) {
    const b = unchecked(blocks[i]);
    if (off >= b.off && off < b.off + b.size) return true;
  }
  return false;
}

/**
 * The blocks to move so the table can take one more entry in place, or null. `dynstrMoving` and
 * `interpMoving`: the layout moves `.dynstr` / the interpreter anyway.
 */
export function planPhdrRoom(elf: Elf, dynstrMoving: bool, interpMoving: bool): Block[] | null {
  if (!elf.shdrsLoaded || elf.phoff == 0) return null;
  const ent: u64 = elf.img.is64 ? 56 : 32;
  const start = elf.phoff + <u64>elf.segments.length * ent;
  const end = start + ent;
  // The grown table must stay inside the PT_LOAD that holds it.
  let inLoad = false;
  for (let i = 0; i < elf.loads.length; i++) {
    const l = unchecked(elf.loads[i]);
    if (elf.phoff >= l.off && end <= l.off + l.filesz) inLoad = true;
  }
  if (!inLoad) return null;
  // Nor may the section header table be in the room (Go's linker puts it right after the program
  // headers): the core moves sections, not that table.
  const shEnd = elf.shTableEnd();
  if (shEnd != 0 && elf.shoff < end && shEnd > start) return null;
  // No segment other than those the core keeps in step may start or end inside the room.
  for (let i = 0; i < elf.segments.length; i++) {
    const g = unchecked(elf.segments[i]);
    if (g.type == PT_LOAD || g.type == PT_PHDR || g.type == PT_NOTE || g.type == PT_GNU_PROPERTY || g.type == PT_INTERP) continue;
    if (g.filesz > 0 && g.off < end && g.off + g.filesz > start) return null;
  }
  const blocks: Block[] = [];
  for (let i = 0; i < elf.sections.length; i++) {
    const s = unchecked(elf.sections[i]);
    if (s.type == 0 || s.type == SHT_NOBITS || s.size == 0 || s.off >= end || s.off + s.size <= start) continue;
    if (s.off < start || !movable(elf, s, dynstrMoving)) return null;
    // Moved by the layout anyway, or already in a block.
    if (s.index == elf.dynstrShIndex || (interpMoving && isInterp(elf, s)) || blockHas(blocks, s.off)) continue;
    let b: Block;
    if (s.type == SHT_NOTE) {
      const g = noteSegment(elf, s);
      if (g < 0) return null;
      const seg = unchecked(elf.segments[g]);
      b = new Block(seg.off, seg.filesz, seg.align > 8 ? seg.align : 8);
    } else {
      b = new Block(s.off, s.size, s.align > 8 ? s.align : 8);
    }
    blocks.push(b);
  }
  // Every section inside a block moves with it; a block must not cut a section in two.
  for (let k = 0; k < blocks.length; k++) {
    const b = unchecked(blocks[k]);
    for (let i = 0; i < elf.sections.length; i++) {
      const s = unchecked(elf.sections[i]);
      if (s.type == 0 || s.type == SHT_NOBITS || s.size == 0) continue;
      const inside = s.off >= b.off && s.off + s.size <= b.off + b.size;
      const cuts = s.off < b.off + b.size && s.off + s.size > b.off && !inside;
      if (cuts || (inside && !movable(elf, s, dynstrMoving))) return null;
      if (inside) b.sections.push(s);
    }
  }
  return blocks;
}
