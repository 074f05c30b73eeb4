/**
 * The batch's shards as one queue shared by every thread (a SharedArrayBuffer): each thread takes
 * its next shard itself, so no thread waits for another to hand work over (the main thread, busy
 * with a shard of its own, could not). Two ends: the main thread takes from the front (the largest
 * files: the Wasm memory their tables need then grows in one thread only), the workers from the
 * back (the smallest); the two meet wherever the work balances out.
 *
 * One 64-bit word holds both ends (front in the low half, back in the high half), changed by
 * compare-and-exchange, so a shard is taken by exactly one thread.
 */
export class ShardQueue {
  private readonly word: BigInt64Array;

  /** A queue of `count` shards, or a view of one another thread made (`buffer`). */
  constructor(countOrBuffer: number | SharedArrayBuffer) {
    if (typeof countOrBuffer === "number") {
      if (!Number.isInteger(countOrBuffer) || countOrBuffer < 0 || countOrBuffer > 0x7fffffff) {
        throw new RangeError(`Bad shard count ${countOrBuffer}`);
      }
      this.word = new BigInt64Array(new SharedArrayBuffer(8));
      Atomics.store(this.word, 0, BigInt(countOrBuffer) << 32n);
    } else {
      this.word = new BigInt64Array(countOrBuffer, 0, 1);
    }
  }

  /** What to send to another thread (structured clone shares the memory). */
  get buffer(): SharedArrayBuffer {
    return this.word.buffer as SharedArrayBuffer;
  }

  /** Shards not taken yet. */
  get left(): number {
    const v = Atomics.load(this.word, 0);
    const front = Number(v & 0xffffffffn);
    const back = Number(BigInt.asUintN(64, v) >> 32n);
    return back > front ? back - front : 0;
  }

  /** Takes the next shard from the front; -1 when none is left. */
  takeFront(): number {
    return this.take(true);
  }

  /** Takes the next shard from the back; -1 when none is left. */
  takeBack(): number {
    return this.take(false);
  }

  private take(front: boolean): number {
    for (;;) {
      const v = Atomics.load(this.word, 0);
      const f = v & 0xffffffffn;
      const b = BigInt.asUintN(64, v) >> 32n;
      if (f >= b) return -1;
      const next = front ? BigInt.asIntN(64, (b << 32n) | (f + 1n)) : BigInt.asIntN(64, ((b - 1n) << 32n) | f);
      if (Atomics.compareExchange(this.word, 0, v, next) === v) return Number(front ? f : b - 1n);
    }
  }
}
