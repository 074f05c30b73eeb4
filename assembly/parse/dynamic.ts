/**
 * Reads the dynamic array (`PT_DYNAMIC`) and locates the dynamic string table through
 * `DT_STRTAB`/`DT_STRSZ` mapped by `PT_LOAD`, as ld.so does (section headers are not needed).
 */
import { Status } from "../../src/shared/status";
import { DT_NULL, DT_STRSZ, DT_STRTAB, isStringTag } from "../elf/constants";
import { DynEntry, Elf } from "./model";

/** Most dynamic entries accepted: far above any real file (a few hundred), low enough to be cheap. */
const MAX_DYN: u64 = 1 << 16;

export function parseDynamic(elf: Elf): void {
  const img = elf.img;
  if (elf.dynIndex < 0) return;
  const seg = unchecked(elf.segments[elf.dynIndex]);
  if (seg.filesz == 0) {
    // No byte of the table is in the file: a separate debug-info file (`objcopy --only-keep-debug`
    // keeps the program headers, not the contents of allocated sections). Nothing to read or edit:
    // the file is taken as having no dynamic table.
    elf.dynIndex = -1;
    return;
  }
  const ent: u64 = img.is64 ? 16 : 8;
  const count = seg.filesz / ent;
  if (count == 0 || count > MAX_DYN) {
    img.fail(count == 0 ? Status.BadDynamic : Status.TooLarge);
    return;
  }
  if (!img.inFile(seg.off, count * ent)) return;
  if (!img.at(seg.off, count * ent)) return;
  elf.dynOff = seg.off;
  elf.dynEntSize = ent;
  let end: i64 = -1;
  for (let i: u64 = 0; i < count; i++) {
    const o = seg.off + i * ent;
    const tag = img.word(o);
    if (tag == DT_NULL) {
      end = <i64>i;
      break;
    }
    elf.dyn.push(new DynEntry(tag, img.word(o + (ent >> 1))));
  }
  if (end < 0) {
    img.fail(Status.BadDynamic); // no DT_NULL terminator
    return;
  }
  // Spare slots: DT_NULL entries right after the terminator (GNU ld reserves some).
  let spare: u32 = 0;
  for (let i = <u64>end + 1; i < count; i++) {
    if (img.word(seg.off + i * ent) != DT_NULL) break;
    spare++;
  }
  elf.dynSpare = spare;
  parseStrtab(elf);
}

function parseStrtab(elf: Elf): void {
  const img = elf.img;
  const addr = elf.dynVal(DT_STRTAB, u64.MAX_VALUE);
  let needsStrings = false;
  for (let i = 0, n = elf.dyn.length; i < n; i++) if (isStringTag(unchecked(elf.dyn[i]).tag)) needsStrings = true;
  if (addr == u64.MAX_VALUE) {
    if (needsStrings) img.fail(Status.BadStringTable);
    return;
  }
  const size = elf.dynVal(DT_STRSZ, 0);
  const off = elf.offFromAddr(addr, size);
  if (off == u64.MAX_VALUE) {
    if (needsStrings) img.fail(Status.UnmappedAddress);
    return;
  }
  if (!img.inFile(off, size)) return;
  elf.strOff = off;
  elf.strSize = size;
  elf.hasStrtab = true;
  if (size > 0) img.at(off, size);
}

/** Checks that every string-valued dynamic entry points at a terminated string. */
export function checkDynStrings(elf: Elf): void {
  for (let i = 0, n = elf.dyn.length; i < n; i++) {
    const e = unchecked(elf.dyn[i]);
    if (isStringTag(e.tag) && elf.strLen(e.val) < 0) {
      elf.img.fail(Status.BadStringTable);
      return;
    }
  }
}
