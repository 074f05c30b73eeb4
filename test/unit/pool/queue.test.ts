/**
 * ShardQueue (src/pool/queue.ts): the batch's shards shared by every thread. The front and the
 * back meet without a shard taken twice or lost, also when threads race for them.
 */
import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { ShardQueue } from "../../../src/pool/queue.js";

describe("shard queue", () => {
  it("gives the front from 0 up and the back from the end down until they meet", () => {
    const q = new ShardQueue(5);
    expect(q.left).toBe(5);
    expect([q.takeFront(), q.takeBack(), q.takeFront(), q.takeBack()]).toEqual([0, 4, 1, 3]);
    expect(q.left).toBe(1);
    expect(q.takeBack()).toBe(2);
    expect([q.takeFront(), q.takeBack(), q.left]).toEqual([-1, -1, 0]);
    expect(new ShardQueue(0).takeFront()).toBe(-1);
    expect(() => new ShardQueue(-1)).toThrow(RangeError);
  });

  it("a view made from the buffer in another thread shares the ends", () => {
    const q = new ShardQueue(3);
    const view = new ShardQueue(q.buffer);
    expect(view.takeBack()).toBe(2);
    expect(q.takeFront()).toBe(0);
    expect(view.left).toBe(1);
  });

  it("threads racing at both ends take every shard exactly once", async () => {
    const n = 200_000;
    const q = new ShardQueue(n);
    // Two threads take from the back as fast as they can while this one takes from the front.
    const source = `
      const { workerData, parentPort } = require("node:worker_threads");
      const word = new BigInt64Array(workerData, 0, 1);
      const got = [];
      for (;;) {
        const v = Atomics.load(word, 0);
        const f = v & 0xffffffffn, b = BigInt.asUintN(64, v) >> 32n;
        if (f >= b) break;
        if (Atomics.compareExchange(word, 0, v, BigInt.asIntN(64, ((b - 1n) << 32n) | f)) === v) got.push(Number(b - 1n));
      }
      parentPort.postMessage(got);
    `;
    const racers = [0, 1].map(() => new Promise<number[]>((resolve, reject) => {
      const w = new Worker(source, { eval: true, workerData: q.buffer });
      w.once("message", resolve);
      w.once("error", reject);
    }));
    const mine: number[] = [];
    for (let i = q.takeFront(); i >= 0; i = q.takeFront()) mine.push(i);
    const theirs = await Promise.all(racers);
    const all = [...mine, ...theirs.flat()];
    expect(all.length).toBe(n);
    const seen = new Uint8Array(n);
    for (const i of all) seen[i]!++;
    expect(seen.every((c) => c === 1)).toBe(true);
  });
});
