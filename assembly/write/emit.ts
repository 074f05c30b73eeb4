/**
 * The only code that stores planned values into the image's working copies, and the diff that
 * turns working copies into the edit list: `[f64 off][u32 len][bytes]` records, sorted by offset,
 * containing only bytes that differ from the original (so a no-op plan emits nothing).
 */
import { DT_MIPS_RLD_MAP_REL, DT_NULL } from "../elf/constants";
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
    const slots = elf.dyn.length + <i32>elf.dynSpare + 1;
    for (let i = 0; i < slots; i++) {
      const o = elf.dynOff + <u64>i * ent;
      if (i < p.dyn.length) {
        const e = unchecked(p.dyn[i]);
        let val = e.val;
        // DT_MIPS_RLD_MAP_REL is relative to its own entry: keep the target when the entry moves.
        if (e.tag == DT_MIPS_RLD_MAP_REL && e.origIndex >= 0) val += <u64>(e.origIndex - i) * ent;
        img.putWord(o, e.tag);
        img.putWord(o + half, val);
      } else {
        img.putWord(o, DT_NULL);
        img.putWord(o + half, 0);
      }
    }
  }
  for (let i = 0, n = p.vnFiles.length; i < n; i++) {
    const v = <u32>unchecked(p.vnFiles[i]);
    const vn = unchecked(elf.verneeds[i]);
    if (v != vn.file) img.put32(vn.fileFieldOff, v);
  }
}

function byOffset(a: Chunk, b: Chunk): i32 {
  return a.off < b.off ? -1 : a.off > b.off ? 1 : 0;
}

/** Emits every changed byte run of every chunk. Returns the number of edits. */
export function emitEdits(chunks: Chunk[], out: Out): i32 {
  const sorted = chunks.slice(0);
  sorted.sort(byOffset);
  let count = 0;
  for (let k = 0, m = sorted.length; k < m; k++) {
    const c = unchecked(sorted[k]);
    if (c.work == c.orig) continue;
    const n = <usize>c.len;
    let i: usize = 0;
    while (i < n) {
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
      out.f64(<f64>(c.off + <u64>start));
      out.u32(<u32>(end - start));
      out.bytes(c.work + start, end - start);
      count++;
      i = end;
    }
  }
  return count;
}
