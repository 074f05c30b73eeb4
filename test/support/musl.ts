/**
 * musl's loader as a test oracle: its `--list` output and the resolver's report in one shape.
 * Used by musl-oracle.test.ts (x86-64, natively) and musl-foreign.test.ts (other architectures
 * under qemu-user).
 */
import type { FileReport } from "../../src/resolve/types.js";

export interface MuslListing {
  /** `name => path` for each library the loader mapped (the loader itself excluded). */
  found: string[];
  /** `name (needed by X): message` for each library it could not load. */
  failed: string[];
  /** Names it answered with itself. */
  self: string[];
}

/** musl's `--list` output, parsed; `loader` is the path it prints for itself. */
export function parseMuslList(stdout: string, stderr: string, loader: string): MuslListing {
  const out: MuslListing = { found: [], failed: [], self: [] };
  for (const line of stdout.split("\n")) {
    const m = /^\t(\S+) => (\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (!m) continue;
    if (m[2] === loader) out.self.push(m[1]!);
    else out.found.push(`${m[1]} => ${m[2]}`);
  }
  for (const line of stderr.split("\n")) {
    const m = /^Error loading shared library (\S+): (.+) \(needed by (\S+)\)$/.exec(line);
    if (m) out.failed.push(`${m[1]} (needed by ${m[3]}): ${m[2]}`);
  }
  return out;
}

/** The resolver's answer in the same shape (each name as the loader prints it: once). */
export function muslListingOf(report: FileReport, loader: string): MuslListing {
  const out: MuslListing = { found: [], failed: [], self: [] };
  for (const e of report.needed) {
    if (e.status === "found" && e.path === loader) out.self.push(e.name);
    else if (e.status === "found" && e.via !== "loaded") out.found.push(`${e.name} => ${e.path}`);
    else if (e.status === "missing" || e.status === "fatal") {
      const message = (e.error ?? "").slice((e.error ?? "").lastIndexOf(": ") + 2);
      out.failed.push(`${e.name} (needed by ${e.by}): ${message}`);
    }
  }
  return out;
}

/** A listing in a canonical order (the loader and the resolver may list in different orders). */
export const sortedListing = (l: MuslListing): MuslListing => ({ found: [...l.found].sort(), failed: [...l.failed].sort(), self: [...new Set(l.self)].sort() });
