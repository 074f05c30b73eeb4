/**
 * Runs the built CLI's `patch --json --no-cache ARGS` and parses its NDJSON: the file records and
 * the summary (tests that judge the files themselves with real tools).
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { repoRoot } from "./fixtures.js";

const CLI = path.join(repoRoot, "build", "js", "cli", "main.js");

export interface PatchRecord {
  type: "file";
  path: string;
  status: string;
  strategy: string | null;
  skipReason?: string;
  error?: { code: string; message: string };
}

export interface PatchRun {
  status: number | null;
  files: PatchRecord[];
  summary: { patched: number; unchanged: number; skipped: number; failed: number };
  stderr: string;
}

export function patchJson(args: string[]): PatchRun {
  const r = spawnSync(process.execPath, [CLI, "patch", "--json", "--no-cache", ...args], { encoding: "utf8" });
  const lines = r.stdout.trim().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { type: string });
  return {
    status: r.status,
    files: lines.filter((l) => l.type === "file") as unknown as PatchRecord[],
    summary: lines.find((l) => l.type === "summary") as unknown as PatchRun["summary"],
    stderr: r.stderr,
  };
}
