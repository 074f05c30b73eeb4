/**
 * The floor of the default mode on this machine: every regular file of a tree copied to a temp
 * file next to it (`copyFileSync`, the kernel's copy) and renamed over the original, by N threads
 * (files dealt round-robin, largest first), with no ELF work, no verification and no sync. What
 * elfpatch's default mode does per changed file minus everything elfpatch adds. Prints the wall
 * milliseconds. Used by `npm run bench`; `node build/js/bench/floor.js DIR [THREADS]`.
 */
import { copyFileSync, readdirSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";

function list(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) list(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function copyAndRename(files: string[]): void {
  for (const f of files) {
    const tmp = `${f}.floor-tmp`;
    copyFileSync(f, tmp);
    renameSync(tmp, f);
  }
}

/** The main thread: shards the files over `THREADS` threads and prints the wall time in ms. */
async function main(): Promise<void> {
  const [dir, threadsArg] = process.argv.slice(2);
  if (!dir) throw new Error("usage: floor.js DIR [THREADS]");
  const threads = Math.max(1, Number(threadsArg ?? 2));
  const files = list(dir).map((f) => ({ f, size: statSync(f).size })).sort((a, b) => b.size - a.size).map((x) => x.f);
  const parts: string[][] = Array.from({ length: threads }, () => []);
  files.forEach((f, i) => parts[i % threads]!.push(f));
  const t0 = performance.now();
  const others = parts.slice(1).map((p) => new Promise<void>((resolve, reject) => {
    const w = new Worker(__filename, { workerData: p });
    w.once("message", () => resolve());
    w.once("error", reject);
  }));
  copyAndRename(parts[0]!);
  await Promise.all(others);
  console.log((performance.now() - t0).toFixed(0));
}

if (isMainThread) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
} else {
  copyAndRename(workerData as string[]);
  parentPort!.postMessage("done");
}
