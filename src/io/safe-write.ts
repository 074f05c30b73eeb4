/**
 * Crash-safe application of an edit list: the new version is made in a temp file in the same
 * directory (a kernel copy/clone of the original plus the edits), fsynced, checked by `verify`,
 * and renamed over the original. Mode, owner and group are kept. On any failure the temp file is
 * removed and the original is untouched. The rename replaces this path only: other hard links to
 * the old inode keep the old bytes (uv's cache stays intact).
 */
import {
  chmodSync, closeSync, constants, copyFileSync, fchmodSync, fchownSync, fstatSync, fsyncSync, linkSync, openSync, renameSync, statSync,
  unlinkSync, writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { threadId } from "node:worker_threads";
import { ElfPatchError, ErrorCode } from "../errors.js";
import type { Edit } from "../core/types.js";

let counter = 0;

function tempPathFor(target: string): string {
  counter++;
  return join(dirname(target), `.${basename(target)}.elfpatch-${process.pid}-${threadId}-${counter}.tmp`);
}

/**
 * Writes `edits` to a copy of `target` and renames it over `target`. `verify(fd)` runs on the
 * finished temp file before the rename and throws to abort. With `dirs`, the directory fsync is
 * left to the caller (it collects the directories and syncs each once). With `planned`, a file
 * whose size or ctime is no longer what the edits were planned on is not touched (IO_CHANGED).
 */
export function writeEditsAtomically(
  target: string,
  edits: Edit[],
  newSize: number,
  verify: (fd: number) => void,
  dirs?: Set<string>,
  planned?: { size: number; ctimeMs?: number },
): void {
  const tmp = tempPathFor(target);
  let fd = -1;
  try {
    const st = statSync(target);
    if (planned && (st.size !== planned.size || (planned.ctimeMs !== undefined && st.ctimeMs !== planned.ctimeMs))) {
      throw new ElfPatchError(ErrorCode.IO_CHANGED, "The file changed after it was planned; nothing written");
    }
    copyFileSync(target, tmp, constants.COPYFILE_FICLONE);
    // The copy has the original's mode; a read-only file must still be writable to us while we edit it.
    chmodSync(tmp, (st.mode & 0o7777) | 0o200);
    fd = openSync(tmp, "r+");
    for (const e of edits) writeFully(fd, e.bytes, e.offset);
    if (fstatSync(fd).size !== newSize) throw new ElfPatchError(ErrorCode.INTERNAL, "Edited file has an unexpected size");
    if (st.uid !== process.getuid?.() || st.gid !== process.getgid?.()) {
      try {
        fchownSync(fd, st.uid, st.gid);
      } catch {
        // Not permitted for an unprivileged user; the file then belongs to the user running elfpatch.
      }
    }
    // After the chown, which clears setuid/setgid: the original mode, bits included.
    fchmodSync(fd, st.mode & 0o7777);
    fsyncSync(fd);
    verify(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, target);
    // The directory entry is made durable now, or once per directory by the caller (`dirs`).
    if (dirs) dirs.add(dirname(target));
    else syncDir(dirname(target));
  } catch (err) {
    if (fd >= 0) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // The temp file was never created, or was already renamed.
    }
    throw err;
  }
}

/** Makes `other` a hard link to `source`, atomically (link to a temp name, rename over `other`). */
export function relinkAtomically(source: string, other: string): void {
  const tmp = tempPathFor(other);
  linkSync(source, tmp);
  try {
    renameSync(tmp, other);
  } catch (err) {
    unlinkSync(tmp);
    throw err;
  }
  syncDir(dirname(other));
}

/** Writes all of `bytes` at `offset` (pwrite may write less than asked). */
export function writeFully(fd: number, bytes: Uint8Array, offset: number): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, offset + done);
}

export function syncDir(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on directories; the rename itself is already atomic.
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
