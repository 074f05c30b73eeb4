/** Names of the files a run of elfpatch leaves next to the files it edits (scan and recovery know them). */
import { basename } from "node:path";

/** Undo journals of `--in-place` runs end with this. */
export const UNDO_SUFFIX = ".elfpatch-undo";

/** Temp files: safe-write copies (`.NAME.elfpatch-PID-THREAD-N.tmp`) and journals being written. */
export const STALE_TEMP = /\.elfpatch-\d+-\d+-\d+\.tmp$|\.elfpatch-undo\.\d+-\d+\.tmp$/;

/** The process and thread that made a journal or temp file of ours (`.…elfpatch-PID-THREAD-N…`), or null. */
export function tempOwner(name: string): { pid: number; thread: number } | null {
  const m = /\.elfpatch-(\d+)-(\d+)-\d+(?:\.tmp|\.elfpatch-undo(?:\.\d+-\d+\.tmp)?)$/.exec(name);
  return m ? { pid: Number(m[1]), thread: Number(m[2]) } : null;
}

/** The pid in the name of a journal or temp file of ours, or null. */
export function ownerPid(name: string): number | null {
  return tempOwner(name)?.pid ?? null;
}

/**
 * Whether the file at `path` (a journal or temp file) belongs to another elfpatch process that is
 * still running: then it is not stale, and neither rolled back nor removed. (A reused pid only
 * leaves a stale file for a later run.)
 */
export function ownedByLiveProcess(path: string): boolean {
  const pid = ownerPid(basename(path));
  if (pid === null || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // running, as another user
  }
}
