/** In-place edit items for the undo journal tests: copies of libz and a small known edit. */
import { statSync, readFileSync } from "node:fs";
import type { InPlaceItem } from "../../src/batch/journal.js";

export const LIB = "/usr/lib/x86_64-linux-gnu/libz.so.1";
export const ORIG = readFileSync(LIB);

/** An edit of `path` (a copy of LIB) that changes 3 bytes of its ELF header padding and appends 100 bytes. */
export function item(path: string, seed: number): InPlaceItem {
  const st = statSync(path);
  return {
    path, size: st.size, ctimeMs: st.ctimeMs, newSize: ORIG.length + 100,
    edits: [{ offset: 9, bytes: new Uint8Array([seed, seed + 1, seed + 2]) }, { offset: ORIG.length, bytes: new Uint8Array(100).fill(seed) }],
    undo: [{ offset: 9, data: ORIG.subarray(9, 12) }],
  };
}
