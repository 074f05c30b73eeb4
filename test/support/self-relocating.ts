/**
 * Files elfpatch leaves alone because they relocate themselves (src/batch/process-file.ts,
 * `selfRelocating`), as the tests know them independently of that code: static PIEs (`ET_DYN`,
 * `DF_1_PIE`, no interpreter) and glibc's dynamic loaders by their SONAMEs on the corpus's
 * architectures.
 */
import type { ElfInfo } from "../../src/core/types.js";

export const LOADER_SONAMES = new Set([
  "ld-linux-x86-64.so.2", "ld-linux.so.2", "ld-linux-aarch64.so.1", "ld64.so.1", "ld64.so.2", "ld.so.1", "ld-linux-armhf.so.3",
  "ld-linux.so.3", "ld-linux-x32.so.2", "ld-linux-mipsn8.so.1", "ld-linux-riscv64-lp64d.so.1",
]);

export function isSelfRelocating(info: ElfInfo): boolean {
  if (info.type !== "DYN" || info.interpreter !== null) return false;
  return info.flags1.includes("PIE") || (info.soname !== null && LOADER_SONAMES.has(info.soname) && info.needed.length === 0);
}
