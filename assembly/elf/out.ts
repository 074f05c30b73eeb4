/** A growable output buffer for the info and edit blobs read by the host. */
export class Out {
  ptr: usize;
  len: usize = 0;
  cap: usize;

  constructor(cap: usize = 1024) {
    this.cap = cap;
    this.ptr = heap.alloc(cap);
  }

  private reserve(n: usize): usize {
    if (this.len + n > this.cap) {
      let cap = this.cap << 1;
      while (cap < this.len + n) cap <<= 1;
      this.ptr = heap.realloc(this.ptr, cap);
      this.cap = cap;
    }
    const at = this.ptr + this.len;
    this.len += n;
    return at;
  }

  /** Appends a record header `[u8 kind][u32 len]`. */
  head(kind: i32, len: usize): void {
    const p = this.reserve(5);
    store<u8>(p, <u8>kind);
    store<u32>(p + 1, <u32>len);
  }

  bytes(src: usize, n: usize): void {
    const p = this.reserve(n);
    memory.copy(p, src, n);
  }

  f64(v: f64): void {
    store<f64>(this.reserve(8), v);
  }

  u32(v: u32): void {
    store<u32>(this.reserve(4), v);
  }

  /** A numeric record. */
  num(kind: i32, v: f64): void {
    this.head(kind, 8);
    this.f64(v);
  }

  /** A string record with bytes copied from `src`. */
  str(kind: i32, src: usize, n: usize): void {
    this.head(kind, n);
    this.bytes(src, n);
  }
}
