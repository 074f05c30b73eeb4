/**
 * Undo journals for `--in-place` writes (and `--hardlinks preserve`), which edit files' own inodes.
 * One journal covers a group of files (a shard): before the first byte of any of them changes, the
 * original bytes of every range the edits touch and each original size are written to a sidecar
 * `.elfpatch-<pid>-<thread>-<n>.elfpatch-undo` next to the first file (temp file, fsync, rename,
 * fsync of the directory). The journal is removed only after every edited file is fsynced. A run
 * killed at any moment leaves either a complete journal (roll every file back to its original) or
 * none (nothing was touched yet); `recoverJournal` handles both and can itself be re-run.
 * Batching keeps the fsync cost near one per file instead of four.
 */
import { createHash } from "node:crypto";
import {
  closeSync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, readSync, renameSync, unlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { threadId } from "node:worker_threads";
import { ElfPatchError, ErrorCode, toErrorRecord, type ErrorRecord } from "../errors.js";
import type { Edit } from "../core/types.js";
import { checkUnchanged, syncDir, syncFileSystems, writeFully } from "../io/safe-write.js";

import { UNDO_SUFFIX } from "./temp-names.js";

export { UNDO_SUFFIX };

interface JournalFile {
  /** The edited file, relative to the journal's directory. */
  file: string;
  size: number;
  blocks: { offset: number; data: string }[];
}

interface JournalBody {
  version: 2;
  files: JournalFile[];
}

/** One file to edit in place. `verify(fd)` checks the result and throws to reject it. */
export interface InPlaceItem {
  path: string;
  edits: Edit[];
  newSize: number;
  verify: (fd: number) => void;
  /** The file's size when it was planned; with the edits' original bytes the journal needs no read. */
  size?: number;
  /** Its change time then: a file changed since is not edited (IO_CHANGED). */
  ctimeMs?: number;
}

let counter = 0;

function digest(body: string): string {
  return createHash("sha256").update(body).digest("hex");
}


function undoFor(path: string, dir: string, edits: Edit[], plannedSize?: number): JournalFile {
  if (plannedSize !== undefined) {
    const inside = edits.filter((e) => e.offset < plannedSize);
    if (inside.every((e) => e.orig !== undefined && e.offset + e.orig.length <= plannedSize)) {
      // The core kept the original bytes of every range it changes: journal those.
      const blocks = inside.map((e) => ({ offset: e.offset, data: Buffer.from(e.orig!.buffer, e.orig!.byteOffset, e.orig!.length).toString("base64") }));
      return { file: relative(dir, path), size: plannedSize, blocks };
    }
  }
  const fd = openSync(path, "r");
  try {
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
    return { file: relative(dir, path), size, blocks };
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes and syncs one journal for all `items`; returns its path. `announce` hears the path before
 * anything is written (a worker tells the main thread, which rolls the journal back if the worker
 * dies: see Pool).
 */
function writeJournal(items: InPlaceItem[], announce?: (journal: string) => void): { path: string; body: JournalBody } {
  const dir = dirname(items[0]!.path);
  const body: JournalBody = { version: 2, files: items.map((it) => undoFor(it.path, dir, it.edits, it.size)) };
  const text = JSON.stringify(body);
  counter++;
  const path = join(dir, `.elfpatch-${process.pid}-${threadId}-${counter}${UNDO_SUFFIX}`);
  announce?.(path);
  const tmp = `${path}.${process.pid}-${threadId}.tmp`;
  writeFileSync(tmp, `${digest(text)}\n${text}`, { mode: 0o600 });
  const fd = openSync(tmp, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  syncDir(dir);
  return { path, body };
}

function rollBack(dir: string, f: JournalFile): string {
  const file = join(dir, f.file);
  const fd = openSync(file, "r+");
  try {
    for (const b of f.blocks) writeFully(fd, Buffer.from(b.data, "base64"), b.offset);
    ftruncateSync(fd, f.size);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return file;
}

/**
 * Edits every item's file in place under one undo journal. Returns, per item, null (done) or the
 * error that made it roll back (the other items are unaffected), and the journal when `defer`:
 * then the edited files are not synced one by one and the journal stays, for `commitJournals`
 * to make everything durable at once at the end of the batch (a group commit).
 */
export function writeEditsInPlace(
  items: InPlaceItem[],
  defer = false,
  announce?: (journal: string) => void,
): { errors: (ErrorRecord | null)[]; journal: string | null } {
  if (items.length === 0) return { errors: [], journal: null };
  const { path: journal, body } = writeJournal(items, announce);
  const dir = dirname(journal);
  let keepJournal = defer;
  let failedRollback = false;
  const errors = items.map((it, i): ErrorRecord | null => {
    let fd = -1;
    let touched = false;
    try {
      fd = openSync(it.path, "r+"); // ETXTBSY for a running program: nothing written, nothing to undo
      if (it.size !== undefined) checkUnchanged(fstatSync(fd), { size: it.size, ...(it.ctimeMs !== undefined ? { ctimeMs: it.ctimeMs } : {}) });
      touched = true;
      for (const e of it.edits) writeFully(fd, e.bytes, e.offset);
      if (fstatSync(fd).size !== it.newSize) throw new ElfPatchError(ErrorCode.INTERNAL, "Edited file has an unexpected size");
      it.verify(fd);
      if (!defer) fdatasyncSync(fd);
      return null;
    } catch (err) {
      if (fd >= 0) closeSync(fd);
      fd = -1;
      if (touched) {
        try {
          rollBack(dir, body.files[i]!);
        } catch {
          keepJournal = true; // the next run (or `elfpatch recover`) rolls this file back
          failedRollback = true;
        }
      }
      return toErrorRecord(err);
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  });
  // Deferred, the journal waits for the group commit, unless no file of it was edited after all.
  const pending = defer && errors.some((e) => e === null);
  if (!keepJournal || (defer && !pending && !failedRollback)) {
    unlinkSync(journal);
    syncDir(dir);
    return { errors, journal: null };
  }
  return { errors, journal: pending && !failedRollback ? journal : null };
}

/**
 * Ends a group commit: makes every file edited under `journals` durable — one `syncfs` per file
 * system (coreutils `sync -f`), or an fdatasync per file when that is not available — and only
 * then removes the journals. Until then a crash leaves journals that roll every file back.
 */
export function commitJournals(journals: string[], files: string[]): void {
  if (journals.length === 0) return;
  const dirs = [...new Set(journals.map((j) => dirname(j)))];
  if (!syncFileSystems(dirs)) {
    for (const f of files) {
      const fd = openSync(f, "r");
      try {
        fdatasyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
  for (const j of journals) unlinkSync(j);
  for (const d of dirs) syncDir(d);
}

export type RecoverOutcome = "rolled-back" | "discarded";

/** Rolls every file of the journal back to its original bytes (or drops an incomplete journal). */
export function recoverJournal(journal: string): { files: string[]; outcome: RecoverOutcome } {
  const text = readFileSync(journal, "utf8");
  const nl = text.indexOf("\n");
  const body = text.slice(nl + 1);
  let parsed: JournalBody | null = null;
  if (nl > 0 && digest(body) === text.slice(0, nl)) {
    try {
      parsed = JSON.parse(body) as JournalBody;
    } catch {
      parsed = null;
    }
  }
  if (!parsed) {
    // Never completed (it is renamed into place before any edit), so no file was touched.
    unlinkSync(journal);
    return { files: [], outcome: "discarded" };
  }
  if (parsed.version !== 2) {
    // Complete but of a format this version cannot apply: keep it, and say so.
    throw new ElfPatchError(ErrorCode.IO_WRITE, "Undo journal of an unsupported version; can't roll back");
  }
  const dir = dirname(journal);
  const files = parsed.files.map((f) => rollBack(dir, f));
  unlinkSync(journal);
  syncDir(dir);
  return { files, outcome: "rolled-back" };
}
