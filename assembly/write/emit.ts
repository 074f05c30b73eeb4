/**
 * The only code that stores planned values into the image's working copies, and the diff that
 * turns working copies into the edit list: `[f64 off][u32 len][u32 ptr][u32 orig][u32 0]` records, sorted by
 * offset, covering only bytes that differ from the original (so a no-op plan emits nothing).
 */
import { DT_MIPS_RLD_MAP_REL, DT_NULL, VER_NDX_GLOBAL } from "../elf/constants";
import { Chunk } from "../elf/reader";
import { Out } from "../elf/out";
import { Elf } from "../parse/model";
import { Plan } from "../plan/state";

/** Equal bytes shorter than this between two changed runs are emitted too, to keep edits few. */
const MERGE_GAP: usize = 16;

/** Stores the planned dynamic array (and `vn_file` values) into the working copies. */
export function writePlan(elf: Elf, p: Plan): void {
  const img = elf.img;
  if (p.dynDirty) {
    const ent = elf.dynEntSize;
    const half = ent >> 1;
        for (let i = 0; i < p.dynSlots; i++) {
      const o = p.dynOff + <u64>i * ent;
      if (i < p.dyn.length) {
        const e = unchecked(p.dyn[i]);
        let val = e.val;
        // DT_MIPS_RLD_MAP_REL is relative to its own entry: keep the target when the entry moves.
        if (e.tag == DT_MIPS_RLD_MAP_REL && e.origIndex >= 0) {
          val += (p.origDynVaddr + <u64>e.origIndex * ent) - (p.dynVaddr + <u64>i * ent);
        }
        img.putWord(o, e.tag);
        img.putWord(o + half, val);
      } else {
        img.putWord(o, DT_NULL);
        // The terminator gets a zero value; spare slots beyond it keep whatever value they had
        // (some tools leave stale values there): nothing reads them, and fewer bytes change.
        if (p.dynOff != elf.dynOff || i <= p.dyn.length || i < elf.dyn.length) img.putWord(o + half, 0);
      }
    }
  }
  if (p.vnDirty) {
    rewriteVerneed(elf, p);
    return;
  }
  for (let i = 0, n = p.vnFiles.length; i < n; i++) {
    const v = <u32>unchecked(p.vnFiles[i]);
    const vn = unchecked(elf.verneeds[i]);
    if (v != vn.file) img.put32(vn.fileFieldOff, v);
  }
}

/**
 * Rewrites the (compact) Verneed table without the removed entries, zeroes the bytes it no longer
 * uses, points symbols that used a removed version at VER_NDX_GLOBAL (so no `l_versions` index
 * past the shorter table is ever used), and updates the section's `sh_info` count.
 */
function rewriteVerneed(elf: Elf, p: Plan): void {
  const img = elf.img;
  let end = elf.verneedOff;
  for (let i = 0, n = elf.verneeds.length; i < n; i++) end += 16 + 16 * <u64>unchecked(elf.verneeds[i]).names.length;
  const keep: i32[] = [];
  const dropped: u32[] = [];
  for (let i = 0, n = elf.verneeds.length; i < n; i++) {
    if (!unchecked(p.vnRemoved[i])) keep.push(i);
    else {
      const others = unchecked(elf.verneeds[i]).others;
      for (let j = 0; j < others.length; j++) dropped.push(unchecked(others[j]));
    }
  }
  let o = elf.verneedOff;
  for (let k = 0, n = keep.length; k < n; k++) {
    const i = unchecked(keep[k]);
    const vn = unchecked(elf.verneeds[i]);
    const cnt = vn.names.length;
    img.put16(o, 1);
    img.put16(o + 2, <u32>cnt);
    img.put32(o + 4, <u32>unchecked(p.vnFiles[i]));
    img.put32(o + 8, 16);
    img.put32(o + 12, k == n - 1 ? 0 : 16 + 16 * <u32>cnt);
    o += 16;
    for (let j = 0; j < cnt; j++) {
      img.put32(o, unchecked(vn.hashes[j]));
      img.put16(o + 4, unchecked(vn.flags[j]));
      img.put16(o + 6, unchecked(vn.others[j]));
      img.put32(o + 8, unchecked(vn.names[j]));
      img.put32(o + 12, j == cnt - 1 ? 0 : 16);
      o += 16;
    }
  }
  if (end > o) {
    const z = img.atw(o, end - o);
    if (z) memory.fill(z, 0, <usize>(end - o));
  }
  for (let i: u64 = 0; i < elf.versymCount; i++) {
    const at = elf.versymOff + i * 2;
    const v = img.u16(at) & 0x7fff;
    if (v > VER_NDX_GLOBAL && dropped.includes(v)) img.put16(at, VER_NDX_GLOBAL);
  }
  if (elf.verneedShInfoOff != 0) img.put32(elf.verneedShInfoOff, <u32>keep.length);
}

function byOffset(a: Chunk, b: Chunk): i32 {
  return a.off < b.off ? -1 : a.off > b.off ? 1 : 0;
}

/**
 * Visits every changed byte run of every chunk, in file order: `[start, end)` in chunk `c`.
 * Appended chunks (no original) are one run, zeros included, so the file gets no holes.
 */
function forEachRun(chunks: Chunk[], fn: (c: Chunk, start: usize, end: usize, out: Out | null) => void, out: Out | null): void {
  const sorted = chunks.slice(0);
  sorted.sort(byOffset);
  for (let k = 0, m = sorted.length; k < m; k++) {
    const c = unchecked(sorted[k]);
    if (c.work == c.orig) continue;
    const n = <usize>c.len;
    if (c.orig == 0) {
      fn(c, 0, n, out);
      continue;
    }
    let i: usize = 0;
    while (i < n) {
      // Equal bytes are skipped a word at a time: most of a copied chunk is unchanged.
      while (i + 8 <= n && load<u64>(c.work + i) == load<u64>(c.orig + i)) i += 8;
      if (i >= n) break;
      if (load<u8>(c.work + i) == load<u8>(c.orig + i)) {
        i++;
        continue;
      }
      const start = i;
      let end = i + 1;
      let j = end;
      while (j < n && j - end < MERGE_GAP) {
        if (load<u8>(c.work + j) != load<u8>(c.orig + j)) end = j + 1;
        j++;
      }
      fn(c, start, end, out);
      i = end;
    }
  }
}

let emitCount: usize = 0;

/**
 * The edit list: `[f64 off][u32 len][u32 ptr][u32 orig][u32 0]` per run, in file order. `ptr`
 * points at the new bytes in the working copies, `orig` at the file's original bytes of the same
 * range as read (0 for bytes past the original end): the host journals them for `--in-place`
 * without reading the file again. Both are valid until the next job.
 */
export function emitEdits(chunks: Chunk[]): Out {
  emitCount = 0;
  forEachRun(chunks, (c: Chunk, start: usize, end: usize, out: Out | null): void => {
    emitCount++;
  }, null);
  const out = new Out(emitCount > 0 ? emitCount * 24 : 1);
  forEachRun(chunks, (c: Chunk, start: usize, end: usize, out: Out | null): void => {
    const o = out!;
    o.f64(<f64>(c.off + <u64>start));
    o.u32(<u32>(end - start));
    o.u32(<u32>(c.work + start));
    o.u32(c.orig == 0 ? 0 : <u32>(c.orig + start));
    o.u32(0);
  }, out);
  return out;
}
