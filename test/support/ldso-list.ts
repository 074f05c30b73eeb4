/**
 * glibc's `ld.so --list` as a test oracle: its listing and the resolver's load list in one form,
 * and a small pool for running many loader processes at once. Used by resolve-oracle.test.ts
 * (this machine's loader) and glibc-releases.test.ts (other releases' loaders, in chroot).
 */
import type { FileReport } from "../../src/resolve/types.js";

/** A finished child process. */
export interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs `job` over `items` with `width` at a time; results in input order. */
export async function pool<T, R>(items: T[], width: number, job: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await job(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
  return out;
}

/** `name => path` lines of `ld.so --list` (vDSO and the loader's own line left out); "static" for "statically linked". */
export function listLines(stdout: string): string[] | "static" {
  const out: string[] = [];
  for (const raw of stdout.split("\n")) {
    const line = raw.trim();
    if (line === "statically linked") return "static";
    const m = /^(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (m) out.push(`${m[1]} => ${m[2]}`);
  }
  return out;
}

/** The resolver's load list in the same form: every edge that mapped a new object, or failed. */
export function resolverLines(r: FileReport): string[] {
  return r.needed.filter((e) => e.via !== "loaded" && e.status !== "skipped").map((e) => `${e.name} => ${e.status === "found" ? e.path : "not found"}`);
}
