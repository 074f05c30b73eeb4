/**
 * Places strings in `.dynstr` without moving it. Linkers tail-merge `.dynstr` (a symbol name may be
 * the tail of a run path), so before any byte is overwritten every live reference is considered:
 * dynamic entries, dynamic symbol names, `Verneed`/`Verdef` names. Placement order:
 *   1. an existing live string (or tail of one) equal to the new string: no byte written;
 *   2. in place at the old string's offset, if the bytes from there are unreferenced;
 *   3. the first unreferenced run of bytes large enough (dead strings left by earlier edits);
 *   4. when the plan may grow the file: appended to a private copy of the table, which the
 *      layout then writes elsewhere (old offsets stay valid: the copy keeps every old byte);
 *   otherwise `NoRoom`. Never writes into bytes any live reference uses.
 */

/** Zero bytes kept at the end of a moved table, so later edits fit without moving it again. */
export const STR_HEADROOM: u64 = 512;

/** Starts planning on the file's own table (its working copy). */
export function beginStrings(elf: Elf): void {
  if (elf.hasStrtab) elf.tab = new StrTab(elf.strPtr(0), elf.strSize, elf.strSize, false);
}

/** Makes room for `extra` more bytes: the first time, the table becomes a private copy. */
function growTab(elf: Elf, extra: u64): StrTab {
  const t = elf.tab!;
  if (t.moved && t.size + extra + STR_HEADROOM <= t.cap) return t;
  let cap = t.size + extra + STR_HEADROOM;
  if (t.moved && cap < t.cap * 2) cap = t.cap * 2;
  const ptr = heap.alloc(<usize>cap);
  memory.copy(ptr, t.ptr, <usize>t.size);
  memory.fill(ptr + <usize>t.size, 0, <usize>(cap - t.size));
  // The file's table is no longer used: undo edits planned into it so none is written there.
  if (!t.moved) elf.img.revert(elf.strOff, elf.strSize);
  const grown = new StrTab(ptr, t.size, cap, true);
  elf.tab = grown;
  return grown;
}
import { isStringTag } from "../elf/constants";
import { Elf, StrTab } from "../parse/model";
import { Plan } from "./state";

/** Sorted list of covered `.dynstr` intervals `[start, nul]` (inclusive), from live references. */
class Covered {
  starts: u64[] = [];
  ends: u64[] = [];
}

/**
 * Marks every byte a live reference uses (offset 0, dynamic entries as they will be written,
 * dynamic symbol names, `Verneed`/`Verdef` names): from each reference up to its NUL. A run that
 * reaches a byte already marked stops there (the rest up to the NUL is marked already), so the
 * cost is one pass over the table plus one step per reference, with no sorting.
 */
function markRef(mark: usize, base: usize, size: u64, r: u64): void {
  if (r >= size) return; // validated at parse; defensive
  for (let e = r; e < size; e++) {
    if (load<u8>(mark + <usize>e) != 0) return;
    store<u8>(mark + <usize>e, 1);
    if (load<u8>(base + <usize>e) == 0) return;
  }
}

function covered(p: Plan): Covered {
  const elf = p.elf;
  const c = new Covered();
  const base = elf.strPtr(0);
  const size = elf.strTableSize;
  if (size == 0) return c;
  const mark = heap.alloc(<usize>size);
  memory.fill(mark, 0, <usize>size);
  markRef(mark, base, size, 0);
  for (let i = 0, n = p.dyn.length; i < n; i++) {
    const e = unchecked(p.dyn[i]);
    if (isStringTag(e.tag) && e.val != u64.MAX_VALUE) markRef(mark, base, size, e.val);
  }
  for (let i = 0, n = elf.symNames.length; i < n; i++) markRef(mark, base, size, <u64>unchecked(elf.symNames[i]));
  for (let i = 0, n = p.vnFiles.length; i < n; i++) {
    const v = unchecked(p.vnFiles[i]);
    if (v != u64.MAX_VALUE) markRef(mark, base, size, v);
  }
  for (let i = 0, n = elf.verneeds.length; i < n; i++) {
    const names = unchecked(elf.verneeds[i]).names;
    for (let j = 0, m = names.length; j < m; j++) markRef(mark, base, size, <u64>unchecked(names[j]));
  }
  for (let i = 0, n = elf.verdefAllNames.length; i < n; i++) markRef(mark, base, size, <u64>unchecked(elf.verdefAllNames[i]));
  // Intervals [first marked byte, its NUL] (or [start, size] for an unterminated last string).
  let start: i64 = -1;
  for (let i: u64 = 0; i < size; i++) {
    if (load<u8>(mark + <usize>i) == 0) continue;
    if (start < 0) start = <i64>i;
    if (load<u8>(base + <usize>i) == 0) {
      c.starts.push(<u64>start);
      c.ends.push(i);
      start = -1;
    }
  }
  if (start >= 0) {
    c.starts.push(<u64>start);
    c.ends.push(size);
  }
  heap.free(mark);
  return c;
}

/** Length of the unreferenced run of bytes starting at `pos` (0 if `pos` is in use). */
function freeRunAt(c: Covered, pos: u64, size: u64): u64 {
  for (let i = 0, n = c.starts.length; i < n; i++) {
    const s = unchecked(c.starts[i]);
    const e = unchecked(c.ends[i]);
    if (pos >= s && pos <= e) return 0;
    if (s > pos) return s - pos;
  }
  return size - pos;
}

/** Offset of an existing live string whose tail equals the new string, or u64.MAX. */
function findExisting(p: Plan, c: Covered, s: usize, len: u64): u64 {
  const base = p.elf.strPtr(0);
  for (let i = 0, n = c.starts.length; i < n; i++) {
    const st = unchecked(c.starts[i]);
    const e = unchecked(c.ends[i]);
    if (e - st < len) continue;
    const at = e - len;
    if (len == 0 || memory.compare(base + <usize>at, s, <usize>len) == 0) return at;
  }
  return u64.MAX_VALUE;
}

/** Makes the file's own table writable (copy on write) before the first store into it. */
function writable(elf: Elf): void {
  const t = elf.tab!;
  if (!t.moved) t.ptr = elf.img.atw(elf.strOff, elf.strSize);
}

function writeAt(elf: Elf, at: u64, s: usize, len: u64): void {
  writable(elf);
  const dst = elf.strPtr(at);
  memory.copy(dst, s, <usize>len);
  store<u8>(dst + <usize>len, 0);
}

/**
 * Returns the `.dynstr` offset where `s` (len bytes, no NUL) now lives, writing it if needed, or
 * u64.MAX when it cannot be placed. The references being retargeted must already be detached
 * (set to u64.MAX in the plan) so their old bytes count as free. `oldOff` is the old string's
 * offset (u64.MAX when the reference is new).
 */
export function placeString(p: Plan, s: usize, len: u64, oldOff: u64): u64 {
  const elf = p.elf;
  if (!elf.hasStrtab) return u64.MAX_VALUE;
  const c = covered(p);
  const found = findExisting(p, c, s, len);
  if (found != u64.MAX_VALUE) return found;
  const size = elf.strTableSize;
  if (oldOff != u64.MAX_VALUE && oldOff < size) {
    let room = freeRunAt(c, oldOff, size);
    const oldLen = <u64>elf.strLen(oldOff);
    if (!elf.freeSpaceTrusted && room > oldLen + 1) room = oldLen + 1;
    if (room >= len + 1) {
      writeAt(elf, oldOff, s, len); // (makes the table writable)
      // Clear the rest of the old string so no stale text stays readable; those bytes stay free.
      const clearEnd = oldOff + (oldLen + 1 < room ? oldLen + 1 : room);
      if (clearEnd > oldOff + len + 1) memory.fill(elf.strPtr(oldOff + len + 1), 0, <usize>(clearEnd - oldOff - len - 1));
      return oldOff;
    }
  }
  if (elf.freeSpaceTrusted) {
    const at = firstFit(c, size, len);
    if (at != u64.MAX_VALUE) {
      writeAt(elf, at, s, len);
      return at;
    }
  }
  if (!p.allowGrowth) return u64.MAX_VALUE;
  const t = growTab(elf, len + 1);
  const at = t.size;
  t.size += len + 1;
  writeAt(elf, at, s, len);
  return at;
}

/** The first unreferenced run (gaps between covered intervals, and the tail) of `len + 1` bytes. */
function firstFit(c: Covered, size: u64, len: u64): u64 {
  let pos: u64 = 0;
  for (let i = 0, n = c.starts.length; i <= n; i++) {
    const next = i < n ? unchecked(c.starts[i]) : size;
    if (next > pos && next - pos >= len + 1) return pos;
    if (i < n) pos = unchecked(c.ends[i]) + 1;
  }
  return u64.MAX_VALUE;
}

/** Whether the `.dynstr` string at `idx` equals `s` (len bytes). */
export function strEquals(elf: Elf, idx: u64, s: usize, len: u64): bool {
  const l = elf.strLen(idx);
  return l >= 0 && <u64>l == len && (len == 0 || memory.compare(elf.strPtr(idx), s, <usize>len) == 0);
}
