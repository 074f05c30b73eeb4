/**
 * Crash-safe application of an edit list: the new version is made in a temp file in the same
 * directory (a kernel copy/clone of the original plus the edits), made durable, checked by `verify`,
 * and renamed over the original. Mode, owner and group are kept. On any failure the temp file is
 * removed and the original is untouched. The rename replaces this path only: other hard links to
 * the old inode keep the old bytes (uv's cache stays intact).
 */
import { createHash } from "node:crypto";
import {
  chmodSync, closeSync, constants, copyFileSync, fchmodSync, fchownSync, fstatSync, fsyncSync, linkSync, openSync, renameSync,
  statSync, unlinkSync, writeSync, type Stats,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { threadId } from "node:worker_threads";
import { ElfPatchError, ErrorCode, explained } from "../errors.js";
import type { Edit } from "../core/types.js";

/**
 * node:fs/promises and node:child_process are required where a write needs them: a run that
 * writes nothing (a re-run) loads neither (with their dependencies, streams, net, readline: about
 * 30 internal modules node compiles at first use, in every thread).
 */
const promises = (): typeof import("node:fs/promises") => require("node:fs/promises") as typeof import("node:fs/promises");

let counter = 0;

/** The longest file name Linux file systems take (`NAME_MAX`, in bytes). */
const NAME_MAX = 255;

/**
 * The temp file next to `target`: `.NAME.elfpatch-PID-THREAD-N.tmp`. A name too long to take the
 * prefix and suffix within NAME_MAX is cut (at a character boundary) and given a hash of the whole
 * name, so that it stays unique per file: `.NAME-START~HASH.elfpatch-...tmp`. (Scan and recovery
 * know temp files by their suffix.)
 */
export function tempPathFor(target: string): string {
  counter++;
  const name = basename(target);
  const suffix = `.elfpatch-${process.pid}-${threadId}-${counter}.tmp`;
  let stem = name;
  if (1 + Buffer.byteLength(name) + suffix.length > NAME_MAX) {
    const hash = `~${createHash("sha256").update(name).digest("hex").slice(0, 16)}`;
    const room = NAME_MAX - 1 - suffix.length - hash.length;
    let cut = "";
    for (const ch of name) {
      if (Buffer.byteLength(cut + ch) > room) break;
      cut += ch;
    }
    stem = cut + hash;
  }
  return join(dirname(target), `.${stem}${suffix}`);
}

/** Why a temp copy cannot be made next to the file (the directory refuses new files). */
const COPY_WHY =
  "without --in-place the new version is written to a temp file in the same directory and renamed over the " +
  "original, so the directory must be writable";
const COPY_REFUSED = { EACCES: COPY_WHY, EPERM: COPY_WHY, EROFS: COPY_WHY };
/** Why the original cannot be replaced by its new version. */
const RENAME_WHY = "the file is immutable or append-only, or its directory is sticky (like /tmp) and the file belongs to another user";
const RENAME_REFUSED = { EACCES: RENAME_WHY, EPERM: RENAME_WHY };
const copyRefused = (err: unknown, target: string): unknown =>
  explained(err, ErrorCode.IO_WRITE, `Cannot create the new version next to the file in ${dirname(target)}`, COPY_REFUSED);
const renameRefused = (err: unknown): unknown =>
  explained(err, ErrorCode.IO_WRITE, "Cannot replace the file with its new version", RENAME_REFUSED);

/** What the edits were planned on: a file no longer of this size and change time is not touched. */
export interface PlannedState {
  size: number;
  ctimeMs?: number;
}

/** Throws IO_CHANGED when `st` is no longer the state the edits were planned on. */
export function checkUnchanged(st: { size: number; ctimeMs: number }, planned?: PlannedState): void {
  if (planned && (st.size !== planned.size || (planned.ctimeMs !== undefined && st.ctimeMs !== planned.ctimeMs))) {
    throw new ElfPatchError(ErrorCode.IO_CHANGED, "The file changed after it was planned; nothing written");
  }
}

/**
 * The first half of a crash-safe write: the new version of `target` in a temp file of the same
 * directory (kernel copy/clone of the original, the edits, owner and mode of the original),
 * checked by `verify`; returns the temp file's path. With `sync`, the temp file is fsynced here;
 * without, the caller makes it durable before `commitCopy` (one `syncFileSystems` for a group of
 * files costs one journal commit instead of one per file). On failure nothing is left behind.
 */
export function prepareCopy(
  target: string,
  edits: Edit[],
  newSize: number,
  verify: ((fd: number, size?: number) => void) | undefined,
  planned?: PlannedState,
  sync = true,
): string {
  const tmp = tempPathFor(target);
  try {
    const st = statSync(target);
    checkUnchanged(st, planned);
    try {
      copyFileSync(target, tmp, constants.COPYFILE_FICLONE);
    } catch (err) {
      throw copyRefused(err, target);
    }
    editCopy(tmp, st, edits, newSize, verify, sync);
    return tmp;
  } catch (err) {
    discardCopy(tmp);
    throw err;
  }
}

/**
 * prepareCopy with the copy itself made on libuv's thread pool: a thread can keep several copies
 * going (the kernel copy mostly waits for the disk and the page cache) while it works on others.
 */
export async function prepareCopyAsync(
  target: string,
  edits: Edit[],
  newSize: number,
  verify: ((fd: number, size?: number) => void) | undefined,
  planned?: PlannedState,
): Promise<string> {
  const tmp = tempPathFor(target);
  try {
    const st = statSync(target);
    checkUnchanged(st, planned);
    await promises().copyFile(target, tmp, constants.COPYFILE_FICLONE).catch((err: unknown) => {
      throw copyRefused(err, target);
    });
    editCopy(tmp, st, edits, newSize, verify, false);
    return tmp;
  } catch (err) {
    discardCopy(tmp);
    throw err;
  }
}

/** The copy's edits, owner and mode (those of `st`, the original), and its check. */
function editCopy(
  tmp: string,
  st: Stats,
  edits: Edit[],
  newSize: number,
  verify: ((fd: number, size?: number) => void) | undefined,
  sync: boolean,
): void {
  // The copy has the original's mode; a read-only file must still be writable to us while we edit it.
  if ((st.mode & 0o200) === 0) chmodSync(tmp, (st.mode & 0o7777) | 0o200);
  const fd = openSync(tmp, "r+");
  try {
    writeEdits(fd, edits, st.size, newSize);
    if (st.uid !== process.getuid?.() || st.gid !== process.getgid?.()) {
      try {
        fchownSync(fd, st.uid, st.gid);
      } catch {
        // Not permitted for an unprivileged user; the file then belongs to the user running elfpatch.
      }
    }
    // After the chown, which clears setuid/setgid: the original mode, bits included (the copy has
    // it already unless the chown or the chmod above changed it).
    if (st.uid !== process.getuid?.() || st.gid !== process.getgid?.() || (st.mode & 0o200) === 0 || (st.mode & 0o6000) !== 0) {
      fchmodSync(fd, st.mode & 0o7777);
    }
    if (sync) fsyncSync(fd);
    verify?.(fd, newSize);
  } finally {
    closeSync(fd);
  }
}

/**
 * The second half: renames the (durable) temp file over `target`, unless `target` changed since
 * it was planned. The directory entry is made durable now, or once per directory by the caller
 * (`dirs`). On failure the caller discards the temp file.
 */
export function commitCopy(tmp: string, target: string, planned?: PlannedState, dirs?: Set<string>): void {
  // The copy was made from the bytes the edits were planned on; a file changed since then (even
  // while its copy was being made) is left alone.
  checkUnchanged(statSync(target), planned);
  try {
    renameSync(tmp, target);
  } catch (err) {
    throw renameRefused(err);
  }
  if (dirs) dirs.add(dirname(target));
  else syncDir(dirname(target));
}

/**
 * commitCopy with the rename made on libuv's thread pool (replacing a file frees the old version's
 * blocks: a thread can keep several going). The caller makes the directory entries durable.
 */
export async function commitCopyAsync(tmp: string, target: string, planned?: PlannedState): Promise<void> {
  checkUnchanged(statSync(target), planned);
  await promises().rename(tmp, target).catch((err: unknown) => {
    throw renameRefused(err);
  });
}

/** Removes a temp file of `prepareCopy` (nothing if it is gone). */
export function discardCopy(tmp: string): void {
  try {
    unlinkSync(tmp);
  } catch {
    // The temp file was never created, or was already renamed.
  }
}

/**
 * Makes everything written so far on the file systems of `dirs` durable: one `syncfs` each
 * (coreutils `sync -f`). Returns false when that is not available (the caller then fsyncs file by
 * file).
 */
export function syncFileSystems(dirs: Iterable<string>): boolean {
  // `sync -f` makes one syncfs per argument: one directory per file system is enough.
  const byDevice = new Map<number, string>();
  for (const d of new Set(dirs)) {
    try {
      const dev = statSync(d).dev;
      if (!byDevice.has(dev)) byDevice.set(dev, d);
    } catch {
      return false;
    }
  }
  const list = [...byDevice.values()];
  if (list.length === 0) return true;
  try {
    const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
    return spawnSync("sync", ["-f", ...list], { stdio: "ignore" }).status === 0;
  } catch {
    return false;
  }
}

/** fsyncs one file by path. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
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

/**
 * Writes `edits` into the file behind `fd`, which had `size` bytes (undefined: unknown), and checks
 * that it has the planned `newSize` now: from the edits alone when they show it (appended bytes
 * end where the plan says the file ends), else by an fstat.
 */
export function writeEdits(fd: number, edits: readonly Edit[], size: number | undefined, newSize: number): void {
  let end = size ?? -1;
  for (const e of edits) {
    writeFully(fd, e.bytes, e.offset);
    if (size !== undefined && e.offset + e.bytes.length > end) end = e.offset + e.bytes.length;
  }
  if (end !== newSize && fstatSync(fd).size !== newSize) throw new ElfPatchError(ErrorCode.INTERNAL, "Edited file has an unexpected size");
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
