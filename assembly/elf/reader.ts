/**
 * The sparse file image: the byte ranges of the file the host has provided so far, and bounds-
 * checked, endian- and class-aware loads from them. A load of a range that is not present records
 * a need (the host reads it and the parse restarts); a load past the end of the file records
 * `Truncated`. Loads never trap: on failure they return 0 and set the job status.
 *
 * Invariant: chunks never overlap (a need that overlaps chunks is widened to cover them, and a
 * provided chunk replaces the ones it contains), so every file byte has at most one copy and
 * writes made while planning are seen by every later read.
 */
import { Status } from "../../src/shared/status";

/** Reads smaller than this are widened, so that neighbouring small tables arrive in one round. */
const MIN_READ: u64 = 16384;
/**
 * A read that starts this close to the end of the file takes the rest of it: the dynamic array
 * lies near the end, and a string table that had to grow was moved past everything else (by
 * elfpatch, and by other patchers), so both come in one round (on the bench tree's re-run, 681 of
 * its 750 files that took three reads).
 */
const TAIL_READ: u64 = 65536;
/** The most bytes one file may make the core hold: bigger tables are refused as hostile. */
const MAX_HELD: u64 = 512 << 20;

export class Chunk {
  /** The bytes written while planning lie in `[lo, hi)` of the chunk (none when lo >= hi). */
  lo: usize = usize.MAX_VALUE;
  hi: usize = 0;
  constructor(public off: u64, public len: u64, public orig: usize, public work: usize) {}
}

export class Image {
  chunks: Chunk[] = [];
  status: Status = Status.Ok;
  needOff: u64 = 0;
  needLen: u64 = 0;
  held: u64 = 0;
  big: bool = false; // big endian
  is64: bool = false;
  last: Chunk | null = null;

  /** The file size before any planned growth. */
  origSize: u64;

  constructor(public size: u64) {
    this.origSize = size;
  }

  /** Drops everything a previous plan wrote (working copies, appended bytes): back to the file. */
  resetWrites(): void {
    const kept: Chunk[] = [];
    for (let i = 0, n = this.chunks.length; i < n; i++) {
      const c = unchecked(this.chunks[i]);
      if (c.orig == 0) continue;
      c.work = c.orig;
      c.lo = usize.MAX_VALUE;
      c.hi = 0;
      kept.push(c);
    }
    this.chunks = kept;
    this.size = this.origSize;
    this.last = null;
  }

  /** Records the first failure of this parse round; later ones are ignored. */
  fail(s: Status): void {
    if (this.status == Status.Ok) this.status = s;
  }

  get ok(): bool {
    return this.status == Status.Ok;
  }

  /** Returns the address of `len` file bytes at `off`, or 0 after recording a need or an error. */
  at(off: u64, len: u64): usize {
    if (off > this.size || len > this.size - off) {
      this.fail(Status.Truncated);
      return 0;
    }
    const last = this.last;
    if (last !== null && off >= last.off && off + len <= last.off + last.len) {
      return last.work + <usize>(off - last.off);
    }
    const chunks = this.chunks;
    for (let i = 0, n = chunks.length; i < n; i++) {
      const c = unchecked(chunks[i]);
      if (off >= c.off && off + len <= c.off + c.len) {
        this.last = c;
        return c.work + <usize>(off - c.off);
      }
    }
    this.need(off, len);
    return 0;
  }

  /** Whether `len` bytes at `off` lie inside the file. Records `Truncated` when not. */
  inFile(off: u64, len: u64): bool {
    if (off > this.size || len > this.size - off) {
      this.fail(Status.Truncated);
      return false;
    }
    return true;
  }

  private need(off: u64, len: u64): void {
    if (this.status != Status.Ok) return;
    let start = off;
    let end = off + (len < MIN_READ ? MIN_READ : len);
    if (end > this.size || this.size - off <= TAIL_READ) end = this.size;
    // Widen over every chunk the range touches, until stable, to keep chunks disjoint.
    let changed = true;
    while (changed) {
      changed = false;
      for (let i = 0, n = this.chunks.length; i < n; i++) {
        const c = unchecked(this.chunks[i]);
        if (c.off < end && c.off + c.len > start && (c.off < start || c.off + c.len > end)) {
          if (c.off < start) start = c.off;
          if (c.off + c.len > end) end = c.off + c.len;
          changed = true;
        }
      }
    }
    if (this.held + (end - start) > MAX_HELD) {
      this.fail(Status.TooLarge);
      return;
    }
    this.status = Status.NeedRange;
    this.needOff = start;
    this.needLen = end - start;
  }

  /** Allocates a chunk for `[off, off+len)`, dropping chunks it contains; returns where to put the bytes. */
  provide(off: u64, len: u64): usize {
    const kept: Chunk[] = [];
    for (let i = 0, n = this.chunks.length; i < n; i++) {
      const c = unchecked(this.chunks[i]);
      if (c.off >= off && c.off + c.len <= off + len) this.held -= c.len;
      else kept.push(c);
    }
    const ptr = heap.alloc(<usize>(len > 0 ? len : 1));
    kept.push(new Chunk(off, len, ptr, ptr));
    this.chunks = kept;
    this.held += len;
    this.last = null;
    return ptr;
  }

  /**
   * Extends the file to `newSize`: a new zero-filled chunk covers the added bytes. Such a chunk
   * has no original (`orig == 0`) and is emitted whole.
   */
  grow(newSize: u64): void {
    if (newSize <= this.size) return;
    const len = newSize - this.size;
    const ptr = heap.alloc(<usize>len);
    memory.fill(ptr, 0, <usize>len);
    this.chunks.push(new Chunk(this.size, len, 0, ptr));
    this.size = newSize;
    this.last = null;
  }

  /** Restores the original bytes of `[off, off+len)` in the working copy (a range no longer used). */
  revert(off: u64, len: u64): void {
    for (let i = 0, n = this.chunks.length; i < n; i++) {
      const c = unchecked(this.chunks[i]);
      if (c.orig != 0 && off >= c.off && off + len <= c.off + c.len) {
        memory.copy(c.work + <usize>(off - c.off), c.orig + <usize>(off - c.off), <usize>len);
        return;
      }
    }
  }

  /**
   * Like `at`, for bytes about to be written: the chunk gets a private working copy first (copy on
   * write), so the original stays available for the diff and untouched chunks cost nothing.
   */
  atw(off: u64, len: u64): usize {
    const p = this.at(off, len);
    if (!p) return 0;
    const c = this.last!;
    // Where the chunk may now differ from the file: the diff (emit) looks only there.
    const lo = <usize>(off - c.off);
    const hi = lo + <usize>len;
    if (lo < c.lo) c.lo = lo;
    if (hi > c.hi) c.hi = hi;
    if (c.work == c.orig) {
      c.work = heap.alloc(<usize>(c.len > 0 ? c.len : 1));
      memory.copy(c.work, c.orig, <usize>c.len);
      return c.work + lo;
    }
    return p;
  }

  // Endian-aware loads. Each returns 0 (and records a status) when the bytes are not available.
  u8(off: u64): u32 {
    const p = this.at(off, 1);
    return p ? <u32>load<u8>(p) : 0;
  }
  u16(off: u64): u32 {
    const p = this.at(off, 2);
    if (!p) return 0;
    const v = load<u16>(p);
    return <u32>(this.big ? bswap<u16>(v) : v);
  }
  u32(off: u64): u32 {
    const p = this.at(off, 4);
    if (!p) return 0;
    const v = load<u32>(p);
    return this.big ? bswap<u32>(v) : v;
  }
  u64(off: u64): u64 {
    const p = this.at(off, 8);
    if (!p) return 0;
    const v = load<u64>(p);
    return this.big ? bswap<u64>(v) : v;
  }
  /** A class-sized word: `Elf32_Addr`/`Elf32_Off`/`Elf32_Word` or their 64-bit forms. */
  word(off: u64): u64 {
    return this.is64 ? this.u64(off) : <u64>this.u32(off);
  }

  // Stores, used only while planning (copy on write through `atw`).
  put16(off: u64, v: u32): void {
    const p = this.atw(off, 2);
    if (p) store<u16>(p, this.big ? bswap<u16>(<u16>v) : <u16>v);
  }
  put32(off: u64, v: u32): void {
    const p = this.atw(off, 4);
    if (p) store<u32>(p, this.big ? bswap<u32>(v) : v);
  }
  putWord(off: u64, v: u64): void {
    if (this.is64) {
      const p = this.atw(off, 8);
      if (p) store<u64>(p, this.big ? bswap<u64>(v) : v);
    } else {
      this.put32(off, <u32>v);
    }
  }
}
