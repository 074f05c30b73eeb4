/**
 * Reads the ELF header, the program header table and (when asked) the section header table.
 * Read only. Section headers are optional: a missing or broken table is recorded, not fatal.
 */
import { Status } from "../../src/shared/status";
import {
  EI_CLASS, EI_DATA, EI_OSABI, EI_VERSION, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, EV_CURRENT,
  PN_XNUM, PT_DYNAMIC, PT_INTERP, PT_LOAD,
} from "../elf/constants";
import { Elf, Segment } from "./model";

/** Parses `e_ident` and the ELF header fields the core uses. */
export function parseHeader(elf: Elf): void {
  const img = elf.img;
  if (img.size < 4) {
    img.fail(Status.BadMagic);
    return;
  }
  const p = img.at(0, img.size < 16 ? img.size : 16);
  if (!p) return;
  if (load<u32>(p) != 0x464c457f) {
    img.fail(Status.BadMagic);
    return;
  }
  if (img.size < 16) {
    img.fail(Status.Truncated);
    return;
  }
  const cls = load<u8>(p + EI_CLASS);
  const data = load<u8>(p + EI_DATA);
  if (cls != ELFCLASS32 && cls != ELFCLASS64) {
    img.fail(Status.BadClass);
    return;
  }
  if (data != ELFDATA2LSB && data != ELFDATA2MSB) {
    img.fail(Status.BadEndian);
    return;
  }
  if (load<u8>(p + EI_VERSION) != EV_CURRENT) {
    img.fail(Status.BadVersion);
    return;
  }
  img.is64 = cls == ELFCLASS64;
  img.big = data == ELFDATA2MSB;
  elf.osabi = load<u8>(p + EI_OSABI);
  const ehsize: u64 = img.is64 ? 64 : 52;
  if (!img.at(0, ehsize)) return;
  elf.type = img.u16(16);
  elf.machine = img.u16(18);
  if (img.is64) {
    elf.entry = img.u64(24);
    elf.phoff = img.u64(32);
    elf.shoff = img.u64(40);
    elf.phnum = img.u16(56);
    elf.shentsize = img.u16(58);
    elf.shnum = img.u16(60);
  } else {
    elf.entry = img.u32(24);
    elf.phoff = img.u32(28);
    elf.shoff = img.u32(32);
    elf.phnum = img.u16(44);
    elf.shentsize = img.u16(46);
    elf.shnum = img.u16(48);
  }
  const phentsize = img.u16(img.is64 ? 54 : 42);
  if (elf.phnum > 0 && phentsize != (img.is64 ? 56 : 32)) img.fail(Status.BadProgramHeaders);
  // A section header table is usable if it lies inside the file with the right entry size.
  // With e_shnum == 0 and e_shoff != 0 the real count is in section 0's sh_size (not read here).
  const shsize: u64 = img.is64 ? 64 : 40;
  elf.hasShdrs = elf.shoff != 0 && elf.shnum != 0 && <u64>elf.shentsize == shsize &&
    elf.shoff <= img.size && <u64>elf.shnum * shsize <= img.size - elf.shoff;
}

/** Reads section 0's `sh_info` for the real program header count when `e_phnum == PN_XNUM`. */
function realPhnum(elf: Elf): u32 {
  const img = elf.img;
  if (elf.shoff == 0 || !img.inFile(elf.shoff, img.is64 ? 64 : 40)) {
    img.fail(Status.BadProgramHeaders);
    return 0;
  }
  return img.u32(elf.shoff + (img.is64 ? 44 : 28));
}

/** Parses the program header table into segments; records PT_LOAD, PT_INTERP and PT_DYNAMIC. */
export function parseSegments(elf: Elf): void {
  const img = elf.img;
  let n = elf.phnum;
  if (n == PN_XNUM) n = realPhnum(elf);
  if (!img.ok || n == 0) return;
  const ent: u64 = img.is64 ? 56 : 32;
  if (elf.phoff == 0 || !img.inFile(elf.phoff, <u64>n * ent)) {
    img.fail(img.ok ? Status.BadProgramHeaders : img.status);
    return;
  }
  if (!img.at(elf.phoff, <u64>n * ent)) return;
  let interpSeen = false;
  for (let i: u32 = 0; i < n; i++) {
    const o = elf.phoff + <u64>i * ent;
    const type = img.u32(o);
    let s: Segment;
    if (img.is64) {
      s = new Segment(type, img.u32(o + 4), img.u64(o + 8), img.u64(o + 16), img.u64(o + 24), img.u64(o + 32), img.u64(o + 40), img.u64(o + 48));
    } else {
      s = new Segment(type, img.u32(o + 24), img.u32(o + 4), img.u32(o + 8), img.u32(o + 12), img.u32(o + 16), img.u32(o + 20), img.u32(o + 28));
    }
    elf.segments.push(s);
    if (type == PT_LOAD) elf.loads.push(s);
    else if (type == PT_INTERP && !interpSeen) {
      interpSeen = true;
      // The first PT_INTERP is the one the kernel uses. One with no bytes in the file (a separate
      // debug-info file keeps the header, not `.interp`) names no interpreter: taken as absent.
      if (s.filesz != 0) {
        elf.interpIndex = elf.segments.length - 1;
        elf.interpAddr = s.vaddr;
      }
    }
    else if (type == PT_DYNAMIC && elf.dynIndex < 0) elf.dynIndex = elf.segments.length - 1;
  }
}

/** Reads `PT_INTERP`'s string: returns its length (bytes before the first NUL) or -1 (status set). */
export function interpLen(elf: Elf): i64 {
  const img = elf.img;
  const s = unchecked(elf.segments[elf.interpIndex]);
  if (s.filesz == 0 || s.filesz > 65536) {
    img.fail(Status.BadInterpreter);
    return -1;
  }
  const p = img.at(s.off, s.filesz);
  if (!p) return -1;
  for (let i: u64 = 0; i < s.filesz; i++) if (load<u8>(p + <usize>i) == 0) return <i64>i;
  img.fail(Status.BadInterpreter);
  return -1;
}
