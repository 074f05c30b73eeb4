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

/**
 * Which `.dynstr` bytes live references use: one bit per byte, set from each reference (offset
 * 0, dynamic entries as they will be written, dynamic symbol names, `Verneed`/`Verdef` names) up
 * to and including its NUL. Built with word operations: a reference walks only bytes no earlier
 * reference covered (so the cost stays linear in the table size even when a hostile file points
 * thousands of references into one long string), and the searches below skip 64 bytes at a time.
 */
class Coverage {
  constructor(
    public bits: usize,
    public size: u64,
  ) {}

  isSet(i: u64): bool {
    return ((load<u64>(this.bits + <usize>((i >> 6) << 3)) >> (i & 63)) & 1) != 0;
  }

  /** The first byte in [from, limit) a reference uses, or `limit`. */
  nextSet(from: u64, limit: u64): u64 {
    return this.nextWith(from, limit, 0);
  }

  /** The first byte in [from, limit) no reference uses, or `limit`. */
  nextUnset(from: u64, limit: u64): u64 {
    return this.nextWith(from, limit, u64.MAX_VALUE);
  }

  /** The first byte in [from, limit) whose bit, xor `flip`, is set (a word at a time), or `limit`. */
  private nextWith(from: u64, limit: u64, flip: u64): u64 {
    let i = from;
    while (i < limit) {
      const w = (load<u64>(this.bits + <usize>((i >> 6) << 3)) ^ flip) >> (i & 63);
      if (w != 0) {
        const j = i + ctz(w);
        return j < limit ? j : limit;
      }
      i = (i | 63) + 1;
    }
    return limit;
  }

  /** Marks bytes [from, to] (whole words at a time). */
  setRange(from: u64, to: u64): void {
    if (to < from) return;
    const first = from >> 6;
    const last = to >> 6;
    const lo = u64.MAX_VALUE << (from & 63);
    const hi = u64.MAX_VALUE >> (63 - (to & 63));
    if (first == last) {
      this.or(first, lo & hi);
      return;
    }
    this.or(first, lo);
    for (let w = first + 1; w < last; w++) store<u64>(this.bits + <usize>(w << 3), u64.MAX_VALUE);
    this.or(last, hi);
  }

  private or(word: u64, mask: u64): void {
    const at = this.bits + <usize>(word << 3);
    store<u64>(at, load<u64>(at) | mask);
  }
}

/** The first NUL byte in [from, limit) of the table at `base`, or `limit` (8 bytes per step). */
function nextNul(base: usize, from: u64, limit: u64): u64 {
  let i = from;
  while (i + 8 <= limit) {
    const w = load<u64>(base + <usize>i);
    if (((w - 0x0101010101010101) & ~w & 0x8080808080808080) != 0) break;
    i += 8;
  }
  while (i < limit && load<u8>(base + <usize>i) != 0) i++;
  return i;
}

/**
 * Marks the reference at `r`: from `r` to its NUL, stopping early at a byte an earlier reference
 * covered (from there on the bytes are marked up to the same NUL). Eight bytes per step while
 * neither a NUL nor a covered byte is among them; every byte is walked at most once in all.
 */
function markRef(c: Coverage, base: usize, r: u64): void {
  const size = c.size;
  if (r >= size || c.isSet(r)) return; // out of the table (validated at parse), or covered already
  let i = r;
  while (i + 8 <= size) {
    // The 8 coverage bits and the 8 bytes at i: the first covered byte and the first NUL.
    const shift = i & 63;
    const word = c.bits + <usize>((i >> 6) << 3);
    let cov = load<u64>(word) >> shift;
    if (shift > 56) cov |= load<u64>(word + 8) << (64 - shift);
    cov &= 0xff;
    const w = load<u64>(base + <usize>i);
    const zero = (w - 0x0101010101010101) & ~w & 0x8080808080808080; // lowest set bit: the first NUL
    if (cov == 0 && zero == 0) {
      i += 8;
      continue;
    }
    const nul: u64 = zero != 0 ? ctz(zero) >> 3 : 8;
    const used: u64 = cov != 0 ? ctz(cov) : 8;
    if (used <= nul) c.setRange(r, i + used - 1);
    else c.setRange(r, i + nul);
    return;
  }
  for (; i < size; i++) {
    if (c.isSet(i)) {
      c.setRange(r, i - 1);
      return;
    }
    if (load<u8>(base + <usize>i) == 0) {
      c.setRange(r, i);
      return;
    }
  }
  c.setRange(r, size - 1);
}

function coverage(p: Plan): Coverage {
  const elf = p.elf;
  const base = elf.strPtr(0);
  const size = elf.strTableSize;
  const bytes = <usize>(((size + 63) >> 6) << 3);
  const c = new Coverage(heap.alloc(bytes > 0 ? bytes : 8), size);
  memory.fill(c.bits, 0, bytes);
  markRef(c, base, 0);
  for (let i = 0, n = p.dyn.length; i < n; i++) {
    const e = unchecked(p.dyn[i]);
    if (isStringTag(e.tag) && e.val != u64.MAX_VALUE) markRef(c, base, e.val);
  }
  for (let i = 0, n = elf.symNames.length; i < n; i++) markRef(c, base, <u64>unchecked(elf.symNames[i]));
  for (let i = 0, n = p.vnFiles.length; i < n; i++) {
    const v = unchecked(p.vnFiles[i]);
    if (v != u64.MAX_VALUE) markRef(c, base, v);
  }
  for (let i = 0, n = elf.verneeds.length; i < n; i++) {
    const names = unchecked(elf.verneeds[i]).names;
    for (let j = 0, m = names.length; j < m; j++) markRef(c, base, <u64>unchecked(names[j]));
  }
  for (let i = 0, n = elf.verdefAllNames.length; i < n; i++) markRef(c, base, <u64>unchecked(elf.verdefAllNames[i]));
  return c;
}

/** Length of the unreferenced run of bytes starting at `pos` (0 if `pos` is in use). */
function freeRunAt(c: Coverage, pos: u64): u64 {
  if (pos >= c.size || c.isSet(pos)) return 0;
  return c.nextSet(pos, c.size) - pos;
}

/**
 * Offset of an existing live string whose tail equals the new string (the first such string in
 * the table), or u64.MAX: a NUL-terminated run ending in the `len` bytes, whose first byte of
 * that tail a reference covers (the covering reference then runs through the same NUL).
 */
function findExisting(p: Plan, c: Coverage, s: usize, len: u64): u64 {
  const base = p.elf.strPtr(0);
  const size = c.size;
  if (len > 0) return findTail(c, base, s, len);
  // The empty string: any covered NUL.
  for (let e = nextNul(base, 0, size); e < size; e = nextNul(base, e + 1, size)) if (c.isSet(e)) return e;
  return u64.MAX_VALUE;
}

/**
 * findExisting for a non-empty string (which has no NUL): the first covered offset where its bytes
 * and then a NUL stand. Eight bytes per step while none of them is the string's first byte (the
 * new strings are paths and library names, whose first byte is rare among symbol names).
 */
function findTail(c: Coverage, base: usize, s: usize, len: u64): u64 {
  const size = c.size;
  if (len >= size) return u64.MAX_VALUE;
  const end = size - len; // starts below this leave room for the NUL
  const first = load<u8>(s);
  const pattern = <u64>first * 0x0101010101010101;
  let i: u64 = 0;
  while (i < end) {
    if (i + 8 <= end) {
      const w = load<u64>(base + <usize>i) ^ pattern;
      if (((w - 0x0101010101010101) & ~w & 0x8080808080808080) == 0) {
        i += 8;
        continue;
      }
    }
    const at = base + <usize>i;
    if (load<u8>(at) == first && load<u8>(at + <usize>len) == 0 && memory.compare(at, s, <usize>len) == 0 && c.isSet(i)) return i;
    i++;
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
  const c = coverage(p);
  const found = findExisting(p, c, s, len);
  if (found != u64.MAX_VALUE) return found;
  const size = elf.strTableSize;
  if (oldOff != u64.MAX_VALUE && oldOff < size) {
    let room = freeRunAt(c, oldOff);
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
    const at = firstFit(c, len);
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

/** The first unreferenced run of `len + 1` bytes (between used bytes, or at the end). */
function firstFit(c: Coverage, len: u64): u64 {
  const size = c.size;
  for (let pos = c.nextUnset(0, size); pos < size; ) {
    const used = c.nextSet(pos, size);
    if (used - pos >= len + 1) return pos;
    pos = c.nextUnset(used, size);
  }
  return u64.MAX_VALUE;
}

/** Whether the `.dynstr` string at `idx` equals `s` (len bytes). */
export function strEquals(elf: Elf, idx: u64, s: usize, len: u64): bool {
  const l = elf.strLen(idx);
  return l >= 0 && <u64>l == len && (len == 0 || memory.compare(elf.strPtr(idx), s, <usize>len) == 0);
}
