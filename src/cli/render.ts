/** Human and JSON renderings of per-file records. JSON is one object per line (NDJSON). */
import type { ElfInfo, FileError } from "../core/types.js";
import type { PatchResult } from "../index.js";

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

export function renderPatch(r: PatchResult, dryRun: boolean): string {
  if (!r.changed) return `${r.path}: unchanged`;
  const grew = r.bytesAdded ? `, +${r.bytesAdded} bytes` : "";
  return `${r.path}: ${dryRun ? "would patch" : "patched"} (${r.strategy}, ${r.edits} byte range${r.edits === 1 ? "" : "s"}${grew})`;
}

export function patchRecord(r: PatchResult | FileError, dryRun: boolean): object {
  if ("error" in r) return { schema: SCHEMA_VERSION, path: r.path, status: "failed", error: r.error };
  const pick = (i: ElfInfo) => ({
    interpreter: i.interpreter, soname: i.soname, needed: i.needed, rpath: i.rpath, runpath: i.runpath, flags1: i.flags1,
  });
  return {
    schema: SCHEMA_VERSION, path: r.path, status: r.changed ? (dryRun ? "would-patch" : "patched") : "unchanged",
    changed: r.changed, edits: r.edits, bytesAdded: r.bytesAdded, strategy: r.changed ? r.strategy : null,
    before: pick(r.before), after: r.after ? pick(r.after) : null,
  };
}
