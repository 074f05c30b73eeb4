/**
 * Undo journals for `--in-place` writes (and `--hardlinks preserve`), which edit the file's own
 * inode. Before the first byte changes, the original bytes of every range the edits touch and the
 * original size are written to a sidecar `.<name>.elfpatch-undo` (temp file, fsync, rename, fsync
 * of the directory). The journal is removed only after the edited file is fsynced. A run killed at
 * any moment therefore leaves either a complete journal (roll back to the original) or no valid
 * journal (the file was not touched yet); `recoverJournal` handles both and can itself be re-run.
 */
import { createHash } from "node:crypto";
import {
  closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, readSync, renameSync, unlinkSync, writeFileSync, writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { threadId } from "node:worker_threads";
import { ElfPatchError, ErrorCode } from "../errors.js";
import type { Edit } from "../core/types.js";

export const UNDO_SUFFIX = ".elfpatch-undo";

interface JournalBody {
  version: 1;
  /** The edited file, as a name in the journal's directory. */
  file: string;
  size: number;
  blocks: { offset: number; data: string }[];
}

export function journalPathFor(file: string): string {
  return join(dirname(file), `.${basename(file)}${UNDO_SUFFIX}`);
}

function digest(body: string): string {
  return createHash("sha256").update(body).digest("hex");
}

function syncDir(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on directories; rename is atomic regardless.
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

function writeFully(fd: number, bytes: Uint8Array, offset: number): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, offset + done);
}

/** Writes and syncs the undo journal for `edits` on the open file `fd`; returns its path. */
export function writeJournal(file: string, fd: number, edits: Edit[]): string {
  const size = fstatSync(fd).size;
  const blocks = edits
    .filter((e) => e.offset < size)
    .map((e) => {
      const len = Math.min(e.bytes.length, size - e.offset);
      const buf = Buffer.alloc(len);
      let got = 0;
      while (got < len) got += readSync(fd, buf, got, len - got, e.offset + got);
      return { offset: e.offset, data: buf.toString("base64") };
    });
  const body = JSON.stringify({ version: 1, file: basename(file), size, blocks } satisfies JournalBody);
  const path = journalPathFor(file);
  const tmp = `${path}.${process.pid}-${threadId}.tmp`;
  writeFileSync(tmp, `${digest(body)}\n${body}`, { flag: "w", mode: 0o600 });
  const tfd = openSync(tmp, "r");
  try {
    fsyncSync(tfd);
  } finally {
    closeSync(tfd);
  }
  renameSync(tmp, path);
  syncDir(dirname(path));
  return path;
}

/**
 * Applies `edits` to `file` in place under an undo journal. `verify(fd)` checks the result before
 * the journal is dropped; on any failure the file is rolled back and the error rethrown.
 */
export function writeEditsInPlace(file: string, edits: Edit[], newSize: number, verify: (fd: number) => void): void {
  const fd = openSync(file, "r+");
  let journal: string | null = null;
  try {
    journal = writeJournal(file, fd, edits);
    for (const e of edits) writeFully(fd, e.bytes, e.offset);
    if (fstatSync(fd).size !== newSize) throw new ElfPatchError(ErrorCode.INTERNAL, "Edited file has an unexpected size");
    fsyncSync(fd);
    verify(fd);
  } catch (err) {
    closeSync(fd);
    if (journal) recoverJournal(journal);
    throw err;
  }
  closeSync(fd);
  unlinkSync(journal);
  syncDir(dirname(file));
}

export type RecoverOutcome = "rolled-back" | "discarded";

/** Rolls the journal's file back to its original bytes (or drops an incomplete journal). */
export function recoverJournal(journal: string): { file: string; outcome: RecoverOutcome } {
  const text = readFileSync(journal, "utf8");
  const nl = text.indexOf("\n");
  const sum = text.slice(0, nl);
  const body = text.slice(nl + 1);
  let parsed: JournalBody | null = null;
  if (nl > 0 && digest(body) === sum) {
    try {
      parsed = JSON.parse(body) as JournalBody;
    } catch {
      parsed = null;
    }
  }
  if (!parsed || parsed.version !== 1) {
    // Never completed: it was renamed into place before any edit, so the file is untouched.
    unlinkSync(journal);
    return { file: journal, outcome: "discarded" };
  }
  const file = join(dirname(journal), parsed.file);
  const fd = openSync(file, "r+");
  try {
    for (const b of parsed.blocks) writeFully(fd, Buffer.from(b.data, "base64"), b.offset);
    ftruncateSync(fd, parsed.size);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  unlinkSync(journal);
  syncDir(dirname(journal));
  return { file, outcome: "rolled-back" };
}
