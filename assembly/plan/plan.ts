/**
 * Plans every requested edit in one pass, in the fixed order of `EditRequest`:
 * interpreter, soname, run path (remove, then set), remove needed, replace needed, add needed,
 * no-default-lib. Works on the plan state and the image's working copies; never grows the file:
 * an edit that does not fit returns `NoRoom`. Nothing is changed that need not change, so a
 * request that is already satisfied plans no edit at all.
 */
import { Status } from "../../src/shared/status";
import {
  DF_1_NODEFLIB, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_VERDEF, DT_VERNEED, DT_VERNEEDNUM, DT_VERSYM,
} from "../elf/constants";
import { interpLen } from "../parse/header";
import { Elf } from "../parse/model";
import { Request, Str } from "./request";
import { Plan } from "./state";
import { placeString, strEquals } from "./strtab";

export function planEdits(elf: Elf, req: Request, p: Plan): Status {
  let s = validate(req);
  if (s == Status.Ok && req.interp !== null) s = setInterpreter(p, req.interp!);
  const needsDynamic = req.soname !== null || req.removeRpath || req.rpath !== null ||
    req.removeNeeded.length > 0 || req.replaceOld.length > 0 || req.addNeeded.length > 0 || req.noDefaultLib;
  if (s == Status.Ok && needsDynamic && elf.dynIndex < 0) s = Status.NoDynamic;
  // The loader reads .dynamic at p_vaddr: edits at p_offset must be the bytes it maps there.
  if (s == Status.Ok && needsDynamic) {
    const d = unchecked(elf.segments[elf.dynIndex]);
    if (elf.offFromAddr(d.vaddr, d.filesz) != d.off) s = Status.BadDynamic;
  }
  if (s == Status.Ok && req.soname !== null) s = setString(p, DT_SONAME, req.soname!, DT_SONAME, false);
  if (s == Status.Ok && req.removeRpath) removeTags(p, DT_RPATH, DT_RUNPATH);
  if (s == Status.Ok && req.rpath !== null) {
    const tag = req.rpathIsRpath ? DT_RPATH : DT_RUNPATH;
    s = setString(p, tag, req.rpath!, req.rpathIsRpath ? DT_RUNPATH : DT_RPATH, true);
  }
  for (let i = 0; s == Status.Ok && i < req.removeNeeded.length; i++) s = removeNeeded(p, unchecked(req.removeNeeded[i]));
  for (let i = 0; s == Status.Ok && i < req.replaceOld.length; i++) {
    s = replaceNeeded(p, unchecked(req.replaceOld[i]), unchecked(req.replaceNew[i]));
  }
  if (s == Status.Ok) s = addNeeded(p, req.addNeeded);
  if (s == Status.Ok && req.noDefaultLib) s = setNoDefaultLib(p);
  if (s == Status.Ok && p.dyn.length > p.capacity && !p.allowGrowth) s = Status.NoRoom;
  return s;
}

function hasNul(x: Str): bool {
  for (let i: u64 = 0; i < x.len; i++) if (load<u8>(x.ptr + <usize>i) == 0) return true;
  return false;
}

function validate(req: Request): Status {
  const all: Str[] = [];
  if (req.interp !== null) all.push(req.interp!);
  if (req.soname !== null) all.push(req.soname!);
  if (req.rpath !== null) all.push(req.rpath!);
  for (let i = 0; i < req.removeNeeded.length; i++) all.push(unchecked(req.removeNeeded[i]));
  for (let i = 0; i < req.replaceOld.length; i++) all.push(unchecked(req.replaceOld[i]));
  for (let i = 0; i < req.replaceNew.length; i++) all.push(unchecked(req.replaceNew[i]));
  for (let i = 0; i < req.addNeeded.length; i++) all.push(unchecked(req.addNeeded[i]));
  for (let i = 0; i < all.length; i++) if (hasNul(unchecked(all[i]))) return Status.BadRequest;
  return Status.Ok;
}

/**
 * Writes the new interpreter into `PT_INTERP`'s bytes, NUL-padded (the segment size is kept), or
 * leaves a longer one to the layout, which moves it.
 */
function setInterpreter(p: Plan, x: Str): Status {
  const elf = p.elf;
  if (elf.interpIndex < 0) return Status.NoInterpreter;
  const seg = unchecked(elf.segments[elf.interpIndex]);
  const cur = interpLen(elf);
  if (cur < 0) return elf.img.ok ? Status.BadInterpreter : elf.img.status;
  const ptr = elf.img.at(seg.off, seg.filesz);
  if (<u64>cur == x.len && memory.compare(ptr, x.ptr, <usize>x.len) == 0) return Status.Ok;
  if (x.len + 1 > seg.filesz) {
    if (!p.allowGrowth) return Status.NoRoom;
    p.newInterp = x;
    return Status.Ok;
  }
  const dst = elf.img.atw(seg.off, seg.filesz);
  memory.copy(dst, x.ptr, <usize>x.len);
  memory.fill(dst + <usize>x.len, 0, <usize>(seg.filesz - x.len));
  return Status.Ok;
}

/**
 * Makes the array hold exactly one `tag` entry with string `x`: the first `tag` entry is kept,
 * else the first `other` entry is retagged (when `convert`), else a new entry is appended before
 * the terminator. Remaining `tag`/`other` entries are removed (when `convert`).
 */
function setString(p: Plan, tag: u64, x: Str, other: u64, convert: bool): Status {
  let i = p.indexOf(tag);
  if (i < 0 && convert) i = p.indexOf(other);
  if (i < 0) {
    if (!p.roomFor(1)) return Status.NoRoom;
    const off = placeString(p, x.ptr, x.len, u64.MAX_VALUE);
    if (off == u64.MAX_VALUE) return Status.NoRoom;
    p.insert(p.dyn.length, tag, off);
    return Status.Ok;
  }
  const e = unchecked(p.dyn[i]);
  if (e.tag != tag) {
    e.tag = tag;
    p.dynDirty = true;
  }
  // Drop duplicates of either tag after the kept entry.
  for (let j = p.dyn.length - 1; j >= 0; j--) {
    const d = unchecked(p.dyn[j]);
    if (j != i && (d.tag == tag || (convert && d.tag == other))) {
      p.remove(j);
      if (j < i) i--;
    }
  }
  if (strEquals(p.elf, e.val, x.ptr, x.len)) return Status.Ok;
  const old = e.val;
  e.val = u64.MAX_VALUE; // detach while placing, so its old bytes count as free
  const off = placeString(p, x.ptr, x.len, old);
  e.val = off == u64.MAX_VALUE ? old : off;
  if (off == u64.MAX_VALUE) return Status.NoRoom;
  p.dynDirty = true;
  return Status.Ok;
}

function removeTags(p: Plan, a: u64, b: u64): void {
  for (let j = p.dyn.length - 1; j >= 0; j--) {
    const t = unchecked(p.dyn[j]).tag;
    if (t == a || t == b) p.remove(j);
  }
}

/**
 * Removes every `DT_NEEDED` naming `x`, and the `Verneed` entry for that file: ld.so asserts
 * (`_dl_check_map_versions: needed != NULL`) when a Verneed file is not among the loaded objects.
 * Symbols that used the dropped versions become unversioned (see write/emit.ts).
 */
function removeNeeded(p: Plan, x: Str): Status {
  const elf = p.elf;
  for (let j = p.dyn.length - 1; j >= 0; j--) {
    const e = unchecked(p.dyn[j]);
    if (e.tag == DT_NEEDED && strEquals(elf, e.val, x.ptr, x.len)) p.remove(j);
  }
  let remaining = 0;
  for (let j = 0, n = p.vnFiles.length; j < n; j++) {
    if (unchecked(p.vnRemoved[j])) continue;
    if (strEquals(elf, unchecked(p.vnFiles[j]), x.ptr, x.len)) {
      p.vnRemoved[j] = true;
      p.vnFiles[j] = u64.MAX_VALUE; // its name no longer counts as a reference
      p.vnDirty = true;
    } else {
      remaining++;
    }
  }
  if (!p.vnDirty) return Status.Ok;
  if (!verneedDense(elf)) return Status.BadVersionTable;
  // With no Verneed and no Verdef left, ld.so allocates no version array but would still index it
  // through DT_VERSYM: drop DT_VERSYM too (every symbol is unversioned by then).
  const dropVersym = remaining == 0 && !elf.hasTag(DT_VERDEF);
  for (let j = p.dyn.length - 1; j >= 0; j--) {
    const e = unchecked(p.dyn[j]);
    if (dropVersym && e.tag == DT_VERSYM) {
      p.remove(j);
      continue;
    }
    if (e.tag == DT_VERNEEDNUM && e.val != <u64>remaining) {
      e.val = <u64>remaining;
      p.dynDirty = true;
    }
    // glibc reads Verneed entries until vn_next == 0 without looking at the count: an empty table must go.
    if (remaining == 0 && (e.tag == DT_VERNEED || e.tag == DT_VERNEEDNUM)) p.remove(j);
  }
  return Status.Ok;
}

/**
 * Whether the Verneed entries fill their table exactly: each entry (16 bytes) lies on a 16-byte
 * step of `[start, start + 16 × entries)` and no two share one. Then the table can be written
 * again, compactly (each Verneed followed by its Vernaux entries, as linkers do), in the same
 * bytes, whatever its layout was (patchelf writes all Verneed entries first, then all Vernaux).
 */
function verneedDense(elf: Elf): bool {
  const entries = elf.verneedEntries;
  const n = entries.length;
  if (n == 0) return true;
  const start = elf.verneedOff;
  const seen = new Array<bool>(n);
  for (let i = 0; i < n; i++) {
    const o = unchecked(entries[i]);
    if (o < start || ((o - start) & 15) != 0) return false;
    const k = (o - start) >> 4;
    if (k >= <u64>n || unchecked(seen[<i32>k])) return false;
    unchecked((seen[<i32>k] = true));
  }
  return true;
}

/** Points every `DT_NEEDED` and `vn_file` naming `old` at `nw` (patchelf updates both too). */
function replaceNeeded(p: Plan, old: Str, nw: Str): Status {
  const elf = p.elf;
  let oldOff = u64.MAX_VALUE;
  const hits: i32[] = [];
  for (let j = 0, n = p.dyn.length; j < n; j++) {
    const e = unchecked(p.dyn[j]);
    if (e.tag == DT_NEEDED && strEquals(elf, e.val, old.ptr, old.len)) {
      if (oldOff == u64.MAX_VALUE) oldOff = e.val;
      hits.push(j);
    }
  }
  if (hits.length == 0 || (old.len == nw.len && memory.compare(old.ptr, nw.ptr, <usize>old.len) == 0)) return Status.Ok;
  const vn: i32[] = [];
  for (let j = 0, n = p.vnFiles.length; j < n; j++) {
    if (strEquals(elf, unchecked(p.vnFiles[j]), old.ptr, old.len)) vn.push(j);
  }
  const saved: u64[] = [];
  for (let k = 0; k < hits.length; k++) {
    const e = unchecked(p.dyn[unchecked(hits[k])]);
    saved.push(e.val);
    e.val = u64.MAX_VALUE;
  }
  for (let k = 0; k < vn.length; k++) p.vnFiles[unchecked(vn[k])] = u64.MAX_VALUE;
  const off = placeString(p, nw.ptr, nw.len, oldOff);
  for (let k = 0; k < hits.length; k++) unchecked(p.dyn[unchecked(hits[k])]).val = off == u64.MAX_VALUE ? unchecked(saved[k]) : off;
  for (let k = 0; k < vn.length; k++) p.vnFiles[unchecked(vn[k])] = off == u64.MAX_VALUE ? oldOff : off;
  if (off == u64.MAX_VALUE) return Status.NoRoom;
  p.dynDirty = true;
  return Status.Ok;
}

/** Inserts new `DT_NEEDED` entries before the first existing one, in request order, skipping names present. */
function addNeeded(p: Plan, names: Str[]): Status {
  let at = p.indexOf(DT_NEEDED);
  if (at < 0) at = 0;
  for (let k = 0; k < names.length; k++) {
    const x = unchecked(names[k]);
    let present = false;
    for (let j = 0, n = p.dyn.length; j < n; j++) {
      const e = unchecked(p.dyn[j]);
      if (e.tag == DT_NEEDED && strEquals(p.elf, e.val, x.ptr, x.len)) present = true;
    }
    if (present) continue;
    if (!p.roomFor(1)) return Status.NoRoom;
    const off = placeString(p, x.ptr, x.len, u64.MAX_VALUE);
    if (off == u64.MAX_VALUE) return Status.NoRoom;
    p.insert(at, DT_NEEDED, off);
    at++;
  }
  return Status.Ok;
}

function setNoDefaultLib(p: Plan): Status {
  const i = p.indexOf(DT_FLAGS_1);
  if (i >= 0) {
    const e = unchecked(p.dyn[i]);
    if ((e.val & DF_1_NODEFLIB) == 0) {
      e.val |= DF_1_NODEFLIB;
      p.dynDirty = true;
    }
    return Status.Ok;
  }
  if (!p.roomFor(1)) return Status.NoRoom;
  p.insert(p.dyn.length, DT_FLAGS_1, DF_1_NODEFLIB);
  return Status.Ok;
}
