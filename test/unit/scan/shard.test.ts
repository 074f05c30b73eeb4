/**
 * `shard()` (src/scan/shard.ts): every file lands in exactly one shard, big files go first, no
 * shard holds more than 64 files (or `maxFiles`), and bytes are spread so that no thread gets
 * stuck with a big share of the batch: on the sizes of the real libraries of this machine and on
 * seeded synthetic size mixes (uniform, heavy-tailed, one huge file among many small ones, all
 * empty files).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { shard } from "../../../src/scan/shard.js";
import type { ScannedFile } from "../../../src/scan/walk.js";
import { rng } from "../../support/rng.js";

const LIB_DIR = "/usr/lib/x86_64-linux-gnu";


function files(sizes: number[], prefix = "/batch/f"): ScannedFile[] {
  return sizes.map((size, i) => ({ path: `${prefix}${String(i).padStart(5, "0")}.so`, size, dev: 1, ino: 1000 + i, nlink: 1, sig: "", ctimeMs: 0 }));
}

const bytesOf = (s: ScannedFile[]): number => s.reduce((a, f) => a + f.size, 0);

/** The real sizes of the regular files of the host library directory. */
function hostSizes(): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync(LIB_DIR, { withFileTypes: true })) {
    if (e.isFile() && e.name.includes(".so")) out.push(fs.statSync(path.join(LIB_DIR, e.name)).size);
  }
  return out;
}

/** The invariants every sharding must meet. */
function checkShards(input: ScannedFile[], shards: ScannedFile[][], threads: number, maxFiles = 64): void {
  // Every file exactly once (same objects, nothing invented).
  const flat = shards.flat();
  expect(flat).toHaveLength(input.length);
  expect(new Set(flat).size).toBe(input.length);
  for (const f of flat) expect(input).toContain(f);
  // No empty shard, none above the file limit.
  for (const s of shards) {
    expect(s.length).toBeGreaterThan(0);
    expect(s.length).toBeLessThanOrEqual(maxFiles);
  }
  // Largest first: the order of the flattened shards is by decreasing size.
  for (let i = 1; i < flat.length; i++) expect(flat[i - 1]!.size).toBeGreaterThanOrEqual(flat[i]!.size);
  if (input.length) expect(shards[0]![0]!.size).toBe(Math.max(...input.map((f) => f.size)));
  // Balanced: no shard of several files carries more than a quarter of one thread's fair share,
  // so the tail of the run stays short; a file bigger than that sits in a shard of its own.
  const total = bytesOf(input);
  const limit = Math.max(1, total / threads / 4);
  for (const s of shards) {
    if (s.length > 1) expect(bytesOf(s), `shard of ${s.length} files`).toBeLessThanOrEqual(limit);
  }
  for (const f of input) {
    if (f.size > limit) expect(shards.find((s) => s.includes(f))!).toHaveLength(1);
  }
  // Enough shards to keep every thread busy when no single file dominates the batch.
  const largest = Math.max(0, ...input.map((f) => f.size));
  if (input.length >= threads && total > 0 && largest <= total / threads) expect(shards.length).toBeGreaterThanOrEqual(threads);
}

describe("shard", () => {
  it("no files, no shards", () => {
    expect(shard([], { threads: 4 })).toEqual([]);
  });

  it("one file, one shard", () => {
    const f = files([1234]);
    expect(shard(f, { threads: 8 })).toEqual([f]);
  });

  it("the real libraries of this machine", () => {
    const input = files(hostSizes());
    expect(input.length).toBeGreaterThan(50);
    for (const threads of [1, 2, 4, 16]) checkShards(input, shard(input, { threads }), threads);
  });

  it.each([
    ["uniform", 7, (r: () => number) => Math.floor(r() * 2_000_000) + 1],
    ["heavy-tailed", 11, (r: () => number) => Math.floor(1000 * Math.exp(r() * 12))],
    ["tiny", 13, (r: () => number) => Math.floor(r() * 64) + 4],
  ])("%s sizes", (_name, seed, gen) => {
    const r = rng(seed);
    for (const n of [2, 10, 63, 64, 65, 500, 3000]) {
      const input = files(Array.from({ length: n }, () => gen(r)));
      for (const threads of [1, 2, 3, 8]) checkShards(input, shard(input, { threads }), threads);
    }
  });

  it("one huge file among many small ones starts first, alone", () => {
    const input = files([...Array.from({ length: 400 }, (_, i) => 10_000 + i), 500_000_000]);
    const shards = shard(input, { threads: 4 });
    checkShards(input, shards, 4);
    expect(shards[0]).toEqual([input[400]]);
  });

  it("many empty files: at most 64 per shard", () => {
    const input = files(new Array(1000).fill(0));
    const shards = shard(input, { threads: 2 });
    checkShards(input, shards, 2);
    expect(shards.length).toBeGreaterThanOrEqual(Math.ceil(1000 / 64));
  });

  it("maxFiles is respected", () => {
    const input = files(new Array(100).fill(4096));
    const shards = shard(input, { threads: 1, maxFiles: 7 });
    checkShards(input, shards, 1, 7);
  });

  it("equal sizes keep path order inside the batch and the same input gives the same shards", () => {
    const input = files(new Array(200).fill(8192));
    const a = shard(input, { threads: 3 });
    const b = shard([...input].reverse(), { threads: 3 });
    expect(b.map((s) => s.map((f) => f.path))).toEqual(a.map((s) => s.map((f) => f.path)));
    expect(a.flat().map((f) => f.path)).toEqual(input.map((f) => f.path));
  });
});
