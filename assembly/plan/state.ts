/** The mutable state of one plan: the dynamic array and `vn_file` values as they will be written. */
import { DynEntry, Elf } from "../parse/model";
import { Str } from "./request";

export class PlanEntry extends DynEntry {
  /** Index of the entry in the original array, or -1 for an entry the plan adds. */
  constructor(tag: u64, val: u64, public origIndex: i32) {
    super(tag, val);
  }
}

export class Plan {
  dyn: PlanEntry[] = [];
  dynDirty: bool = false;
  /** Current `vn_file` of each Verneed (u64.MAX while detached during a placement). */
  vnFiles: u64[] = [];
  /** Verneed entries dropped with their last `DT_NEEDED` (the table is then rewritten). */
  vnRemoved: bool[] = [];
  vnDirty: bool = false;
  /** Whether the plan may grow the file when an edit does not fit in place. */
  allowGrowth: bool = false;
  /** A new interpreter too long for `PT_INTERP`'s bytes, placed by the layout. */
  newInterp: Str | null = null;
  /** Where the dynamic array is written: its file offset, address and slot count (moved by the layout). */
  dynOff: u64 = 0;
  dynVaddr: u64 = 0;
  dynSlots: i32 = 0;
  origDynVaddr: u64 = 0;
  /**
   * Moves of `.symtab` symbols left to the host: a symbol defined in section `symFixIndex[i]`
   * moves by `symFixDelta[i]` (mod 2^64, or 2^32 for ELF32). `.symtab` is not needed to run and
   * can be most of a big library's symbol bytes (12.7 MB of libtorch_cpu.so), so the core never
   * loads it; the host streams it once and writes the moved values (see CoreEngine.plan).
   */
  symFixIndex: u32[] = [];
  symFixDelta: u64[] = [];

  constructor(public elf: Elf) {
    this.dynOff = elf.dynOff;
    this.dynSlots = elf.dyn.length + <i32>elf.dynSpare + 1;
    if (elf.dynIndex >= 0) this.dynVaddr = unchecked(elf.segments[elf.dynIndex]).vaddr;
    this.origDynVaddr = this.dynVaddr;
    for (let i = 0, n = elf.dyn.length; i < n; i++) {
      const e = unchecked(elf.dyn[i]);
      this.dyn.push(new PlanEntry(e.tag, e.val, i));
    }
    for (let i = 0, n = elf.verneeds.length; i < n; i++) {
      this.vnFiles.push(<u64>unchecked(elf.verneeds[i]).file);
      this.vnRemoved.push(false);
    }
  }

  /** How many entries `.dynamic` can hold without moving: used slots plus spare DT_NULLs. */
  get capacity(): i32 {
    return this.elf.dyn.length + <i32>this.elf.dynSpare;
  }

  /** Whether `n` more entries fit (always, when the layout may move `.dynamic`). */
  roomFor(n: i32): bool {
    return this.allowGrowth || this.dyn.length + n <= this.capacity;
  }

  indexOf(tag: u64): i32 {
    for (let i = 0, n = this.dyn.length; i < n; i++) if (unchecked(this.dyn[i]).tag == tag) return i;
    return -1;
  }

  remove(i: i32): void {
    this.dyn.splice(i, 1);
    this.dynDirty = true;
  }

  insert(i: i32, tag: u64, val: u64): void {
    const e = new PlanEntry(tag, val, -1);
    const out: PlanEntry[] = [];
    for (let j = 0, n = this.dyn.length; j <= n; j++) {
      if (j == i) out.push(e);
      if (j < n) out.push(unchecked(this.dyn[j]));
    }
    this.dyn = out;
    this.dynDirty = true;
  }
}
