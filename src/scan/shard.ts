/**
 * Groups files into shards for the pool: per-task overhead is ~40 µs, so tasks carry many files;
 * big files go first and are spread by bytes, so one huge library does not serialise the run.
 */
import type { ScannedFile } from "./walk.js";

export interface ShardOptions {
  threads: number;
  /** Most files in one shard. */
  maxFiles?: number;
  /** Most bytes in one shard (a single larger file still makes its own shard). */
  maxBytes?: number;
}

export function shard(files: ScannedFile[], opts: ShardOptions): ScannedFile[][] {
  if (files.length === 0) return [];
  const maxFiles = opts.maxFiles ?? 64;
  const total = files.reduce((s, f) => s + f.size, 0);
  // About 8 shards per thread by bytes, so the tail of the run stays balanced.
  const targetBytes = Math.min(opts.maxBytes ?? Infinity, Math.max(1, Math.ceil(total / (Math.max(1, opts.threads) * 8))));
  const sorted = [...files].sort((a, b) => b.size - a.size || (a.path < b.path ? -1 : 1));
  const shards: ScannedFile[][] = [];
  let cur: ScannedFile[] = [];
  let bytes = 0;
  for (const f of sorted) {
    if (cur.length && (cur.length >= maxFiles || bytes + f.size > targetBytes)) {
      shards.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(f);
    bytes += f.size;
  }
  if (cur.length) shards.push(cur);
  return shards;
}
