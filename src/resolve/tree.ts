/**
 * The load tree of one report as text, like libtree: each library under the object that first
 * needed it, with the reason it was found there; a library's own dependencies appear once, under
 * the edge that loaded it (later requests say "already loaded").
 */
import type { FileReport, NeededRecord, Via } from "./types.js";

const LABELS: Record<Via, string> = {
  rpath: "rpath",
  runpath: "runpath",
  ld_library_path: "LD_LIBRARY_PATH",
  cache: "ld.so.cache",
  default: "default path",
  loaded: "already loaded",
  direct: "direct",
};

function reason(e: NeededRecord): string {
  if (e.via === "rpath" && e.from !== null && e.from !== e.by) return `rpath of ${e.from}`;
  return e.via ? LABELS[e.via] : "";
}

/** One edge as a line of text (without the tree drawing). */
export function describeEdge(e: NeededRecord): string {
  const versions = e.missingVersions.length ? ` (missing versions: ${e.missingVersions.join(", ")})` : "";
  switch (e.status) {
    case "found":
      return `${e.name} => ${e.path} [${reason(e)}]${versions}`;
    case "missing":
      return `${e.name} => not found`;
    case "fatal":
      return `${e.name} => error: ${e.error ?? ""}`;
    case "skipped":
      return `${e.name} (ignored: a token in it has no value)`;
  }
}

export function renderTree(r: FileReport): string[] {
  const children = new Map<string, NeededRecord[]>();
  for (const e of r.needed) {
    const list = children.get(e.by) ?? [];
    list.push(e);
    children.set(e.by, list);
  }
  const lines = [`${r.path}${r.status === "ok" ? "" : ` (${r.status})`}`];
  const expanded = new Set<string>();
  const visit = (obj: string, prefix: string): void => {
    expanded.add(obj);
    const list = children.get(obj) ?? [];
    list.forEach((e, i) => {
      const last = i === list.length - 1;
      lines.push(`${prefix}${last ? "└── " : "├── "}${describeEdge(e)}`);
      if (e.status === "found" && e.via !== "loaded" && e.path !== null && !expanded.has(e.path)) {
        visit(e.path, prefix + (last ? "    " : "│   "));
      }
    });
  };
  visit(r.needed[0]?.by ?? r.path, "");
  for (const e of r.errors) lines.push(`  error: ${e}`);
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  return lines;
}
