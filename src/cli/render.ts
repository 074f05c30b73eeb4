/** Human and JSON renderings of per-file records. JSON is one object per line (NDJSON). */
import type { ElfInfo, FileError } from "../core/types.js";
import type { FileRecord } from "../batch/process-file.js";
import type { BatchSummary } from "../batch/run.js";

export const SCHEMA_VERSION = 1;

export function renderInfo(info: ElfInfo): string {
  const lines = [
    `${info.path}: ELF${info.class} ${info.endian}-endian ${info.type} ${info.machine.name} (${info.osabi.name})`,
  ];
  const add = (label: string, value: string | null | undefined): void => {
    if (value !== null && value !== undefined && value !== "") lines.push(`  ${label}: ${value}`);
  };
  add("interpreter", info.interpreter);
  add("soname", info.soname);
  add("needed", info.needed.join(", "));
  add("rpath", info.rpath);
  add("runpath", info.runpath);
  add("flags", info.flags.join(" "));
  add("flags_1", info.flags1.join(" "));
  if (info.hasDynamic) add("spare dynamic slots", String(info.spareDynamicSlots));
  for (const [file, versions] of Object.entries(info.versionNeeds)) add(`versions needed from ${file}`, versions.join(" "));
  add("versions defined", info.versionDefs.join(" "));
  return lines.join("\n");
}

export function renderError(r: FileError): string {
  return `${r.path}: error ${r.error.code}: ${r.error.message}`;
}


/** One human line per file record. */
export function renderRecord(r: FileRecord): string {
  if (r.status === "failed") return `${r.path}: error ${r.error?.code}: ${r.error?.message}`;
  if (r.status === "skipped") return `${r.path}: skipped (${r.skipReason}${r.duplicateOf ? ` of ${r.duplicateOf}` : ""})`;
  if (r.status === "unchanged") return `${r.path}: unchanged`;
  const grew = r.bytesAdded ? `, +${r.bytesAdded} bytes` : "";
  return `${r.path}: ${r.status === "would-patch" ? "would patch" : "patched"} (${r.strategy}${grew})`;
}

/** The closing summary on stderr. */
export function renderSummary(s: BatchSummary): string {
  const strategies = Object.entries(s.strategies).map(([k, v]) => `${k} ${v}`).join(", ");
  const parts = [
    `${s.patched} patched`, ...(s.wouldPatch ? [`${s.wouldPatch} would patch`] : []), `${s.unchanged} unchanged`,
    `${s.skipped} skipped`, `${s.failed} failed`,
  ];
  const rate = s.elapsedMs > 0 ? Math.round((s.files * 1000) / s.elapsedMs) : s.files;
  return `elfpatch: ${parts.join(", ")} (${s.notElf} non-ELF files ignored${s.cached ? `; ${s.cached} files answered from the result cache` : ""}); +${s.bytesAdded} bytes` +
    (strategies ? ` [${strategies}]` : "") + (s.recovered.length ? `; rolled back ${s.recovered.length} interrupted files` : "") +
    `; ${s.elapsedMs} ms, ${rate} files/s`;
}
