/**
 * Attaches the after-patch resolution (the static resolver's answer, by the loader's rules) to the
 * records of files that were patched or already right, so one `patch --json` run says both what
 * changed and whether every library will now load.
 */
import { Resolver } from "../resolve/resolver.js";
import type { FileReport } from "../resolve/types.js";
import type { FileRecord } from "./process-file.js";

/** The compact form kept on a patch record. */
export interface ResolutionSummary {
  status: FileReport["status"];
  /** Library names that resolve nowhere in the load tree. */
  missing: string[];
  /** Loader errors (missing versions, broken candidates). */
  errors: string[];
  /** The file's own DT_NEEDED entries: where each resolves and how. */
  needed: { name: string; path: string | null; via: string | null }[];
}

/** The resolution of a patched or already-right file; undefined for other records. */
export function resolutionOf(r: FileRecord, resolver: Resolver): ResolutionSummary | undefined {
  if (r.status !== "patched" && r.status !== "unchanged") return undefined;
  const rep = resolver.resolve(r.path);
  return {
    status: rep.status,
    missing: rep.missing,
    errors: rep.errors,
    needed: rep.needed.filter((n) => n.by === rep.path).map((n) => ({ name: n.name, path: n.path, via: n.via })),
  };
}

export function attachResolution(records: FileRecord[], resolver: Resolver = new Resolver()): void {
  for (const r of records) {
    const res = resolutionOf(r, resolver);
    if (res) r.resolution = res;
  }
}
