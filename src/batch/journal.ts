/**
 * Undo journals for `--in-place` writes (and `--hardlinks preserve`), which edit files' own inodes.
 * One journal covers a group of files (a shard): before the first byte of any of them changes, the
 * original bytes of every byte run the edits change and each original size are written to a
 * sidecar `.elfpatch-<pid>-<thread>-<n>.elfpatch-undo` next to the first file, then made durable
 * (fsync of the journal, then of its directory). The journal is removed only after every edited
 * file is durable. A run killed at any moment leaves either a complete journal (its checksum
 * holds: roll every file back to its original) or none or an incomplete one (nothing was touched
 * yet: discarded); `recoverJournal` handles all three and can itself be re-run.
 *
 * Format 3 (binary; format 2, JSON, is still read): the magic line `ELFPATCH-UNDO-3\n`, then
 * `u32 files`, per file `u32 path length, path (UTF-8, relative to the journal's directory),
 * f64 original size, u32 blocks`, per block `f64 offset, u32 length, the original bytes`, all
 * little-endian; then the SHA-256 of everything before it.
 */
import { createHash } from "node:crypto";
import {
  closeSync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, readSync, unlinkSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { threadId } from "node:worker_threads";
import { ElfPatchError, ErrorCode, toErrorRecord, type ErrorRecord } from "../errors.js";
import type { Edit, UndoRun } from "../core/types.js";
import { checkUnchanged, syncDir, syncFileSystems, writeFully } from "../io/safe-write.js";

import { UNDO_SUFFIX } from "./temp-names.js";

export { UNDO_SUFFIX };

const MAGIC = Buffer.from("ELFPATCH-UNDO-3\n", "latin1");

type UndoBlock = UndoRun;

interface JournalFile {
  /** The edited file, relative to the journal's directory. */
  file: string;
  size: number;
  blocks: UndoBlock[];
}

/**
 * One file to edit in place. `verify(fd, size)`, when given, checks the written result and throws
 * to reject it (the batch gives none when the core has already parsed the planned file).
 */
export interface InPlaceItem {
  path: string;
  edits: Edit[];
  newSize: number;
  verify?: (fd: number, size: number) => void;
  /** The original bytes of the runs the edits change (from the core: no read needed). */
  undo?: UndoRun[];
  /** The file's size when it was planned; with the edits' original bytes the journal needs no read. */
  size?: number;
  /** Its change time then: a file changed since is not edited (IO_CHANGED). */
  ctimeMs?: number;
}

let counter = 0;

/**
 * The byte runs where `bytes` differs from `orig` (a write may span unchanged bytes: only the
 * changed ones need undoing), joined when fewer than 16 equal bytes lie between.
 */
function changedRuns(offset: number, bytes: Uint8Array, orig: Uint8Array, out: UndoBlock[]): void {
  const n = Math.min(bytes.length, orig.length);
  let i = 0;
  while (i < n) {
    if (bytes[i] === orig[i]) {
      i++;
      continue;
    }
    const start = i;
    let end = i + 1;
    for (let j = end; j < n && j - end < 16; j++) if (bytes[j] !== orig[j]) end = j + 1;
    out.push({ offset: offset + start, data: orig.slice(start, end) });
    i = end;
  }
}

function undoFor(path: string, dir: string, edits: Edit[], plannedSize?: number, undo?: UndoRun[]): JournalFile {
  if (plannedSize !== undefined && undo !== undefined) return { file: relative(dir, path), size: plannedSize, blocks: undo };
  if (plannedSize !== undefined) {
    const inside = edits.filter((e) => e.offset < plannedSize);
    if (inside.every((e) => e.orig !== undefined && e.offset + e.orig.length <= plannedSize)) {
      // The core kept the original bytes of every range it writes: journal the changed ones.
      const blocks: UndoBlock[] = [];
      for (const e of inside) changedRuns(e.offset, e.bytes, e.orig!, blocks);
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
        while (got < len) {
          const n = readSync(fd, buf, got, len - got, e.offset + got);
          if (n === 0) throw new ElfPatchError(ErrorCode.IO_CHANGED, "The file changed while its undo journal was made; nothing written");
          got += n;
        }
        return { offset: e.offset, data: buf };
      });
    return { file: relative(dir, path), size, blocks };
  } finally {
    closeSync(fd);
  }
}

/** The journal's bytes (format 3). */
function encodeJournal(files: JournalFile[]): Buffer {
  const paths = files.map((f) => Buffer.from(f.file, "utf8"));
  let len = MAGIC.length + 4;
  files.forEach((f, i) => {
    len += 4 + paths[i]!.length + 8 + 4;
    for (const b of f.blocks) len += 12 + b.data.length;
  });
  const buf = Buffer.allocUnsafe(len + 32);
  MAGIC.copy(buf, 0);
  let at = MAGIC.length;
  at = buf.writeUInt32LE(files.length, at);
  files.forEach((f, i) => {
    const p = paths[i]!;
    at = buf.writeUInt32LE(p.length, at);
    at += p.copy(buf, at);
    at = buf.writeDoubleLE(f.size, at);
    at = buf.writeUInt32LE(f.blocks.length, at);
    for (const b of f.blocks) {
      at = buf.writeDoubleLE(b.offset, at);
      at = buf.writeUInt32LE(b.data.length, at);
      buf.set(b.data, at);
      at += b.data.length;
    }
  });
  createHash("sha256").update(buf.subarray(0, len)).digest().copy(buf, len);
  return buf;
}

/**
 * A journal's files, or null when it is incomplete (its checksum does not hold: it was being
 * written when the run stopped, so no file was touched yet). Throws for a complete journal this
 * version cannot apply.
 */
function decodeJournal(raw: Buffer): JournalFile[] | null {
  if (raw.length >= MAGIC.length && raw.subarray(0, MAGIC.length).equals(MAGIC)) {
    if (raw.length < MAGIC.length + 4 + 32) return null;
    const len = raw.length - 32;
    if (!createHash("sha256").update(raw.subarray(0, len)).digest().equals(raw.subarray(len))) return null;
    const bad = (): never => {
      throw new ElfPatchError(ErrorCode.IO_WRITE, "Undo journal is malformed; can't roll back");
    };
    let at = MAGIC.length;
    const need = (n: number): void => void (at + n > len && bad());
    need(4);
    const count = raw.readUInt32LE(at);
    at += 4;
    const files: JournalFile[] = [];
    for (let i = 0; i < count; i++) {
      need(4);
      const plen = raw.readUInt32LE(at);
      at += 4;
      need(plen + 12);
      const file = raw.toString("utf8", at, at + plen);
      at += plen;
      const size = raw.readDoubleLE(at);
      const nblocks = raw.readUInt32LE(at + 8);
      at += 12;
      const blocks: UndoBlock[] = [];
      for (let k = 0; k < nblocks; k++) {
        need(12);
        const offset = raw.readDoubleLE(at);
        const n = raw.readUInt32LE(at + 8);
        at += 12;
        need(n);
        blocks.push({ offset, data: raw.subarray(at, at + n) });
        at += n;
      }
      files.push({ file, size, blocks });
    }
    return files;
  }
  // Format 2: a SHA-256 line, then JSON {version: 2, files: [{file, size, blocks: [{offset, data (base64)}]}]}.
  const text = raw.toString("utf8");
  const nl = text.indexOf("\n");
  const body = text.slice(nl + 1);
  if (nl <= 0 || createHash("sha256").update(body).digest("hex") !== text.slice(0, nl)) return null;
  let parsed: { version: number; files: { file: string; size: number; blocks: { offset: number; data: string }[] }[] };
  try {
    parsed = JSON.parse(body) as typeof parsed;
  } catch {
    return null;
  }
  if (parsed.version !== 2) {
    // Complete but of a format this version cannot apply: keep it, and say so.
    throw new ElfPatchError(ErrorCode.IO_WRITE, "Undo journal of an unsupported version; can't roll back");
  }
  return parsed.files.map((f) => ({ file: f.file, size: f.size, blocks: f.blocks.map((b) => ({ offset: b.offset, data: Buffer.from(b.data, "base64") })) }));
}

/**
 * Writes and syncs one journal for all `items`; returns its path. `announce` hears the path before
 * anything is written (a worker tells the main thread, which rolls the journal back if the worker
 * dies: see Pool).
 */
function writeJournal(items: InPlaceItem[], announce?: (journal: string) => void): { path: string; files: JournalFile[] } {
  const dir = dirname(items[0]!.path);
  const files = items.map((it) => undoFor(it.path, dir, it.edits, it.size, it.undo));
  const bytes = encodeJournal(files);
  let path: string;
  let fd: number;
  for (;;) {
    counter++;
    path = join(dir, `.elfpatch-${process.pid}-${threadId}-${counter}${UNDO_SUFFIX}`);
    announce?.(path);
    // Written under its final name: until the checksum at its end is on disk, recovery sees an
    // incomplete journal and discards it (no file is touched before this returns).
    try {
      fd = openSync(path, "wx", 0o600);
      break;
    } catch (err) {
      // A journal of an earlier process that had this pid, outside the batch: never overwritten.
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
  }
  try {
    writeFully(fd, bytes, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  syncDir(dir);
  return { path, files };
}

function rollBack(dir: string, f: JournalFile): string {
  const file = join(dir, f.file);
  const fd = openSync(file, "r+");
  try {
    for (const b of f.blocks) writeFully(fd, b.data, b.offset);
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
  const { path: journal, files } = writeJournal(items, announce);
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
      it.verify?.(fd, it.newSize);
      if (!defer) fdatasyncSync(fd);
      return null;
    } catch (err) {
      if (fd >= 0) closeSync(fd);
      fd = -1;
      if (touched) {
        try {
          rollBack(dir, files[i]!);
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
  const files = decodeJournal(readFileSync(journal));
  if (!files) {
    // Never completed (it is made durable before any edit), so no file was touched.
    unlinkSync(journal);
    return { files: [], outcome: "discarded" };
  }
  const dir = dirname(journal);
  const done = files.map((f) => rollBack(dir, f));
  unlinkSync(journal);
  syncDir(dir);
  return { files: done, outcome: "rolled-back" };
}
