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
 * Unchanged bytes between two changed runs that one write may span (the core has them: their
 * working copy equals the file). Each write costs the host a system call and the file system an
 * update of the inode: a few larger writes are cheaper than many small ones, and a page is
 * written once. The host journals only the bytes that really change (it compares each write with
 * its original bytes).
 */
const WRITE_GAP: usize = 4096;

/**
 * The first byte at or after `i` (before `n`) where chunk `c`'s working copy differs from its
 * original; `n` if none. Equal bytes are skipped a word at a time: most of a copied chunk is
 * unchanged.
 */
// @ts-ignore: decorator
@inline function nextChange(c: Chunk, i: usize, n: usize): usize {
  while (i < n) {
    while (i + 8 <= n && load<u64>(c.work + i) == load<u64>(c.orig + i)) i += 8;
    if (i >= n) break;
    if (load<u8>(c.work + i) != load<u8>(c.orig + i)) return i;
    i++;
  }
  return n;
}

/**
 * The end of the changed run of chunk `c` that starts at `start`: the run goes on while another
 * changed byte follows within `gap` unchanged bytes (before `n`).
 */
// @ts-ignore: decorator
@inline function runEnd(c: Chunk, start: usize, n: usize, gap: usize): usize {
  let end = start + 1;
  let j = end;
  while (j < n && j - end < gap) {
    if (j + 8 <= n && j + 8 - end <= gap && load<u64>(c.work + j) == load<u64>(c.orig + j)) {
      j += 8;
      continue;
    }
    if (load<u8>(c.work + j) != load<u8>(c.orig + j)) end = j + 1;
    j++;
  }
  return end;
}

/** A piece of a write: bytes `[start, end)` of chunk `c`. */
class Piece {
  constructor(public c: Chunk, public start: usize, public end: usize) {}
}

/**
 * The changed byte runs of every chunk, in file order, as writes: runs of one chunk, or of
 * chunks that follow each other in the file with no byte missing between them, are one write when
 * less than WRITE_GAP unchanged bytes separate them. Appended chunks (no original) are one write
 * each, zeros included, so the file gets no holes; they never join a write of original bytes.
 * Each write is a list of pieces (most have one).
 */
function collectWrites(chunks: Chunk[]): Array<Array<Piece>> {
  const sorted = chunks.slice(0);
  sorted.sort(byOffset);
  const writes = new Array<Array<Piece>>();
  let cur: Array<Piece> | null = null;
  for (let k = 0, m = sorted.length; k < m; k++) {
    const c = unchecked(sorted[k]);
    if (c.orig == 0) {
      const one = new Array<Piece>();
      one.push(new Piece(c, 0, <usize>c.len));
      writes.push(one);
      cur = null;
      continue;
    }
    if (c.work == c.orig || c.lo >= c.hi) {
      // Unchanged: a write may still span it, if it is short enough to be a gap.
      continue;
    }
    const n = c.hi < <usize>c.len ? c.hi : <usize>c.len;
    let i: usize = c.lo;
    while (i < n) {
      const start = nextChange(c, i, n);
      if (start >= n) break;
      const end = runEnd(c, start, n, WRITE_GAP);
      if (cur !== null && joins(unchecked(cur[cur.length - 1]), c, start)) {
        const last = unchecked(cur[cur.length - 1]);
        if (last.c === c) last.end = end;
        else cur.push(new Piece(c, start, end));
      } else {
        cur = new Array<Piece>();
        cur.push(new Piece(c, start, end));
        writes.push(cur);
      }
      i = end;
    }
  }
  return writes;
}

/**
 * Whether a run starting at `start` of chunk `c` joins the write whose last piece is `last`: the
 * same chunk, or the next one in the file with nothing missing between, and few unchanged bytes.
 */
function joins(last: Piece, c: Chunk, start: usize): bool {
  if (last.c === c) return start - last.end <= WRITE_GAP;
  const a = last.c;
  if (a.orig == 0 || a.off + a.len != c.off) return false;
  return (<usize>a.len - last.end) + start <= WRITE_GAP;
}

/**
 * The edit list: `[f64 off][u32 len][u32 ptr][u32 0][u32 0]` per write, in file order; `ptr`
 * points at the new bytes. Valid until the next job.
 */
export function emitEdits(chunks: Chunk[]): Out {
  const writes = collectWrites(chunks);
  const out = new Out(writes.length > 0 ? <usize>writes.length * 24 : 1);
  for (let w = 0, nw = writes.length; w < nw; w++) {
    const pieces = unchecked(writes[w]);
    const first = unchecked(pieces[0]);
    const off = first.c.off + <u64>first.start;
    if (pieces.length == 1) {
      out.f64(<f64>off);
      out.u32(<u32>(first.end - first.start));
      out.u32(<u32>(first.c.work + first.start));
      out.u32(0);
      out.u32(0);
      continue;
    }
    // Pieces of consecutive chunks: whole chunks between the first and the last piece.
    let total: usize = 0;
    for (let k = 0, np = pieces.length; k < np; k++) {
      const p = unchecked(pieces[k]);
      total += (k == np - 1 ? p.end : <usize>p.c.len) - (k == 0 ? p.start : 0);
    }
    const work = heap.alloc(total);
    let at: usize = 0;
    for (let k = 0, np = pieces.length; k < np; k++) {
      const p = unchecked(pieces[k]);
      const from = k == 0 ? p.start : 0;
      const to = k == np - 1 ? p.end : <usize>p.c.len;
      memory.copy(work + at, p.c.work + from, to - from);
      at += to - from;
    }
    out.f64(<f64>off);
    out.u32(<u32>total);
    out.u32(<u32>work);
    out.u32(0);
    out.u32(0);
  }
  return out;
}

/** Equal bytes shorter than this between two changed bytes do not split an undo run. */
const UNDO_GAP: usize = 16;

/**
 * What undoes the edits: `[f64 off][u32 len][u32 orig]` per run of changed bytes of the original
 * file (a write may span unchanged bytes; these runs hold only the changed ones), `orig` pointing
 * at the file's original bytes as read. The host journals them for `--in-place` without reading
 * the file again. Bytes past the original end need no undo (the original size is restored).
 */
export function emitUndo(chunks: Chunk[]): Out {
  const out = new Out(256);
  const sorted = chunks.slice(0);
  sorted.sort(byOffset);
  for (let k = 0, m = sorted.length; k < m; k++) {
    const c = unchecked(sorted[k]);
    if (c.orig == 0 || c.work == c.orig || c.lo >= c.hi) continue;
    const n = c.hi < <usize>c.len ? c.hi : <usize>c.len;
    let i: usize = c.lo;
    while (i < n) {
      const start = nextChange(c, i, n);
      if (start >= n) break;
      const end = runEnd(c, start, n, UNDO_GAP);
      out.f64(<f64>(c.off + <u64>start));
      out.u32(<u32>(end - start));
      out.u32(<u32>(c.orig + start));
      i = end;
    }
  }
  return out;
}
