/**
 * ShardQueue (src/pool/queue.ts): the batch's files, largest first, shared by every thread. The
 * front and the back meet without a file claimed twice or lost, also when threads race for them;
 * claims are guided (large first, small at the end) within the file and byte limits, and a file
 * bigger than the byte limit is claimed alone.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { ShardQueue, type ClaimPolicy } from "../../../src/pool/queue.js";
import { rng } from "../../support/rng.js";

/** Every claim until the queue is empty, alternating ends (as a main thread and a worker would). */
function drain(q: ShardQueue): { front: [number, number][]; back: [number, number][] } {
  const front: [number, number][] = [];
  const back: [number, number][] = [];
  for (let turn = 0; ; turn++) {
    const c = turn % 2 === 0 ? q.takeFront() : q.takeBack();
    if (c === null) {
      if (q.left !== 0) throw new Error("a claim failed while files were left");
      break;
    }
    (turn % 2 === 0 ? front : back).push(c);
  }
  return { front, back };
}

/** The invariants every drain must meet. */
function check(sizes: number[], policy: ClaimPolicy): [number, number][] {
  const q = new ShardQueue(sizes, policy);
  const { front, back } = drain(q);
  const claims = [...front, ...back].sort((a, b) => a[0] - b[0]);
  // Every file exactly once, in contiguous claims that tile [0, n).
  let at = 0;
  for (const [s, e] of claims) {
    expect(s).toBe(at);
    expect(e).toBeGreaterThan(s);
    expect(e - s).toBeLessThanOrEqual(policy.maxFiles);
    const bytes = sizes.slice(s, e).reduce((a, b) => a + b, 0);
    if (e - s > 1 && policy.maxBytes !== undefined) expect(bytes).toBeLessThanOrEqual(policy.maxBytes);
    at = e;
  }
  expect(at).toBe(sizes.length);
  // The front moves up and the back down.
  for (let i = 1; i < front.length; i++) expect(front[i]![0]).toBe(front[i - 1]![1]);
  for (let i = 1; i < back.length; i++) expect(back[i]![1]).toBe(back[i - 1]![0]);
  return claims;
}

const desc = (xs: number[]): number[] => [...xs].sort((a, b) => b - a);

describe("shard queue", () => {
  it("an empty queue has nothing to claim", () => {
    const q = new ShardQueue([], { threads: 2, maxFiles: 8 });
    expect([q.takeFront(), q.takeBack(), q.left]).toEqual([null, null, 0]);
  });

  it("claims are large first and small at the end: the last ones are single files", () => {
    const q = new ShardQueue(new Array(1000).fill(100), { threads: 2, maxFiles: 256 });
    const { front, back } = drain(q);
    const sizes = (cs: [number, number][]) => cs.map(([s, e]) => e - s);
    expect(sizes(front)[0]).toBe(125); // 1000 / (2 threads x 4)
    expect(Math.min(...sizes(front), ...sizes(back))).toBe(1);
    expect(front.length + back.length).toBeLessThan(100); // each claim costs a sync: not one per file
  });

  it("the file limit and the byte limit hold; a file over the byte limit is claimed alone", () => {
    const sizes = desc([900, ...new Array(50).fill(10)]);
    const claims = check(sizes, { threads: 1, maxFiles: 7, maxBytes: 100 });
    expect(claims[0]).toEqual([0, 1]);
  });

  it("guided by bytes: a huge library among many small files starts alone", () => {
    const sizes = desc([500_000_000, ...Array.from({ length: 400 }, (_, i) => 10_000 + i)]);
    const claims = check(sizes, { threads: 4, maxFiles: 256, maxBytes: 256 << 20, byBytes: true });
    expect(claims[0]).toEqual([0, 1]);
  });

  it("the real libraries of this machine, and seeded size mixes, for several thread counts", () => {
    const host: number[] = [];
    for (const e of fs.readdirSync("/usr/lib/x86_64-linux-gnu", { withFileTypes: true })) {
      if (e.isFile() && e.name.includes(".so")) host.push(fs.statSync(path.join("/usr/lib/x86_64-linux-gnu", e.name)).size);
    }
    expect(host.length).toBeGreaterThan(50);
    const r = rng(7);
    const mixes = [host, Array.from({ length: 3000 }, () => Math.floor(1000 * Math.exp(r() * 12))), new Array(700).fill(0)];
    for (const sizes of mixes) {
      for (const threads of [1, 2, 3, 8]) {
        check(desc(sizes), { threads, maxFiles: 256 });
        check(desc(sizes), { threads, maxFiles: 64, maxBytes: 256 << 20, byBytes: true });
      }
    }
  });

  it("a view made from the buffer in another thread shares the ends", () => {
    const sizes = [5, 4, 3];
    const q = new ShardQueue(sizes, { threads: 8, maxFiles: 1 });
    const view = new ShardQueue(sizes, { threads: 8, maxFiles: 1 }, q.buffer);
    expect(view.takeBack()).toEqual([2, 3]);
    expect(q.takeFront()).toEqual([0, 1]);
    expect(view.left).toBe(1);
  });

  it("threads racing at both ends claim every file exactly once", async () => {
    const n = 100_000;
    const sizes = new Array(n).fill(1);
    const policy: ClaimPolicy = { threads: 3, maxFiles: 3 };
    const q = new ShardQueue(sizes, policy);
    // Two threads claim from the back as fast as they can while this one claims from the front.
    // The racers run the built module (npm test builds first), as the pool's workers do.
    const url = new URL("../../../build/js/pool/queue.js", import.meta.url).href;
    const source = `
      const { workerData, parentPort } = require("node:worker_threads");
      import(workerData.url).then(({ ShardQueue }) => {
        const q = new ShardQueue(new Array(workerData.n).fill(1), workerData.policy, workerData.buffer);
        const got = [];
        for (let c = q.takeBack(); c !== null; c = q.takeBack()) for (let i = c[0]; i < c[1]; i++) got.push(i);
        parentPort.postMessage(got);
      });
    `;
    const racers = [0, 1].map(() => new Promise<number[]>((resolve, reject) => {
      const w = new Worker(source, { eval: true, workerData: { url, n, policy, buffer: q.buffer } });
      w.once("message", resolve);
      w.once("error", reject);
    }));
    const mine: number[] = [];
    for (let c = q.takeFront(); c !== null; c = q.takeFront()) for (let i = c[0]; i < c[1]; i++) mine.push(i);
    const theirs = await Promise.all(racers);
    const seen = new Uint8Array(n);
    for (const i of [...mine, ...theirs.flat()]) seen[i]!++;
    expect(seen.every((c) => c === 1)).toBe(true);
  });
});
