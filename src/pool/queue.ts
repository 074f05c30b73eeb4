/**
 * The batch's files, largest first, as one queue shared by every thread (a SharedArrayBuffer):
 * each thread claims its next shard itself, so no thread waits for another to hand work over (the
 * main thread, busy with a shard of its own, could not). Two ends: the main thread claims from the
 * front (the largest files: the Wasm memory their tables need then grows in one thread only), the
 * workers from the back (the smallest); the two meet wherever the work balances out.
 *
 * Claims are guided: a claim takes about 1/(GUIDE × threads) of the files left (at most
 * `maxFiles`, and at most `maxBytes` of files, a bigger file alone), so the first shards are large
 * (each shard costs a sync) and the last ones small (the thread that finishes first waits for the
 * other's last shard only). One 64-bit word holds both ends (front in the low half, back in the
 * high half), changed by compare-and-exchange, so every file is claimed exactly once.
 */

/** A claim is about this fraction of the work left per thread. */
const GUIDE = 4;

export interface ClaimPolicy {
  threads: number;
  /** Most files in one claim. */
  maxFiles: number;
  /** Most bytes of files in one claim (a single larger file is claimed alone). */
  maxBytes?: number;
  /** Guide claims by bytes left as well as by files left (when the work goes with the bytes). */
  byBytes?: boolean;
  /**
   * Fewest bytes of files in one claim while enough are left (a claim costs a sync: the last claims
   * are not made smaller than this).
   */
  minBytes?: number;
}

export class ShardQueue {
  private readonly word: BigInt64Array;
  /** prefix[i]: bytes of files [0, i). */
  private readonly prefix: Float64Array;
  private readonly policy: Required<ClaimPolicy>;

  /**
   * A queue over files of these sizes (in queue order), or, with `buffer`, a view of one another
   * thread made from the same sizes and policy.
   */
  constructor(sizes: readonly number[], policy: ClaimPolicy, buffer?: SharedArrayBuffer) {
    const n = sizes.length;
    if (n > 0x7fffffff) throw new RangeError(`Too many files for one queue: ${n}`);
    this.prefix = new Float64Array(n + 1);
    for (let i = 0; i < n; i++) this.prefix[i + 1] = this.prefix[i]! + sizes[i]!;
    this.policy = {
      threads: Math.max(1, policy.threads),
      maxFiles: Math.max(1, policy.maxFiles),
      maxBytes: policy.maxBytes ?? Infinity,
      byBytes: policy.byBytes ?? false,
      minBytes: policy.minBytes ?? 0,
    };
    if (buffer) {
      this.word = new BigInt64Array(buffer, 0, 1);
    } else {
      this.word = new BigInt64Array(new SharedArrayBuffer(8));
      Atomics.store(this.word, 0, BigInt(n) << 32n);
    }
  }

  /** What to send to another thread (structured clone shares the memory). */
  get buffer(): SharedArrayBuffer {
    return this.word.buffer as SharedArrayBuffer;
  }

  /** Files not claimed yet. */
  get left(): number {
    const [f, b] = ends(Atomics.load(this.word, 0));
    return b > f ? b - f : 0;
  }

  /** Claims the next files from the front: `[start, end)`, or null when none is left. */
  takeFront(): [number, number] | null {
    return this.take(true);
  }

  /** Claims the next files from the back: `[start, end)`, or null when none is left. */
  takeBack(): [number, number] | null {
    return this.take(false);
  }

  private take(front: boolean): [number, number] | null {
    for (;;) {
      const v = Atomics.load(this.word, 0);
      const [f, b] = ends(v);
      if (f >= b) return null;
      const k = this.claimSize(f, b, front);
      const [start, end] = front ? [f, f + k] : [b - k, b];
      const next = front ? pack(f + k, b) : pack(f, b - k);
      if (Atomics.compareExchange(this.word, 0, v, next) === v) return [start, end];
    }
  }

  /** How many files a claim at one end of `[f, b)` takes (at least one). */
  private claimSize(f: number, b: number, front: boolean): number {
    const { threads, maxFiles, maxBytes, byBytes, minBytes } = this.policy;
    const left = b - f;
    const p = this.prefix;
    const bytesOf = (i: number): number => (front ? p[f + i]! - p[f]! : p[b]! - p[b - i]!);
    let k = Math.min(maxFiles, Math.max(1, Math.ceil(left / (threads * GUIDE))));
    let limit = maxBytes;
    if (byBytes) limit = Math.min(limit, Math.max(minBytes, Math.ceil((p[b]! - p[f]!) / (threads * GUIDE))));
    if (limit !== Infinity) {
      // Fewer files when their bytes pass the limit (one file at least, however big).
      for (let i = 1; i <= k; i++) {
        if (bytesOf(i) > limit) {
          k = Math.max(1, i - 1);
          break;
        }
      }
    }
    // More files while the claim holds fewer than minBytes (within the file and byte limits).
    while (k < left && k < maxFiles && bytesOf(k) < minBytes && bytesOf(k + 1) <= maxBytes) k++;
    return k;
  }
}

function ends(v: bigint): [number, number] {
  return [Number(v & 0xffffffffn), Number(BigInt.asUintN(64, v) >> 32n)];
}

function pack(front: number, back: number): bigint {
  return BigInt.asIntN(64, (BigInt(back) << 32n) | BigInt(front));
}
