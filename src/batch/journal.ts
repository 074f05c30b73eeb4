/**
 * Undo journals for `--in-place` writes (and `--hardlinks preserve`), which edit files' own inodes.
 * Each thread of a batch keeps one journal, `.elfpatch-<pid>-<thread>-<n>.elfpatch-undo` next to
 * the first file it edits, and appends one record per group of files (a shard): before the first
 * byte of any of them changes, the original bytes of every byte run the edits change and each
 * original size are appended and made durable (one fdatasync; the journal's directory entry is
 * made durable once, when the journal is created). The journal is removed only after every edited
 * file is durable (the batch's group commit). A run killed at any moment leaves complete records
 * (roll their files back) and at most one incomplete record, its last (being written: none of its
 * files was touched yet, so it is ignored); `recoverJournal` handles both and can itself be re-run.
 *
 * Format 4: the magic line `ELFPATCH-UNDO-4\n`, then records, each `u32 body length, body, the
 * SHA-256 of the body`; a body is `u32 files`, per file `u32 path length, path (UTF-8, relative to
 * the journal's directory), f64 original size, u32 blocks`, per block `f64 offset, u32 length,
 * the original bytes`; all little-endian. Format 2 (a SHA-256 line, then JSON) is still read.
 */
import { createHash } from "node:crypto";
import {
  closeSync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, readSync, unlinkSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { threadId } from "node:worker_threads";
import { ElfPatchError, ErrorCode, explained, toErrorRecord, type ErrorRecord } from "../errors.js";
import type { Edit, UndoRun } from "../core/types.js";
import { checkUnchanged, syncDir, syncFileSystems, writeEdits, writeFully } from "../io/safe-write.js";

import { UNDO_SUFFIX } from "./temp-names.js";

export { UNDO_SUFFIX };

const MAGIC = Buffer.from("ELFPATCH-UNDO-4\n", "latin1");

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

/** Where a record goes: its journal, and the offset at which it starts there. */
export interface RecordPlace {
  journal: string;
  at: number;
}

let counter = 0;

/**
 * A journal being written: created (and its directory entry made durable) with its first record,
 * in the directory of that record's first file; each `append` is durable when it returns.
 */
export class UndoJournal {
  path: string | null = null;
  /** Files edited under its records (a journal under which nothing was edited goes at `close`). */
  edited = 0;
  private fd = -1;
  private end = 0;

  /** `announce` hears where each record goes before anything of it is written (see Pool). */
  constructor(private readonly announce?: (place: RecordPlace) => void) {}

  /** The directory the journal's paths are relative to (known once it exists). */
  get dir(): string | null {
    return this.path === null ? null : dirname(this.path);
  }

  /** Appends the undo record of `items` (their paths relative to the journal's directory). */
  append(items: InPlaceItem[]): { place: RecordPlace; files: JournalFile[] } {
    if (this.path === null) this.createNear(items);
    const dir = this.dir!;
    const files = items.map((it) => undoFor(it.path, dir, it.edits, it.size, it.undo));
    const body = encodeBody(files);
    const place = { journal: this.path!, at: this.end };
    this.announce?.(place);
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32LE(body.length, 0);
    const sum = createHash("sha256").update(body).digest();
    writeFully(this.fd, Buffer.concat([head, body, sum]), this.end);
    fdatasyncSync(this.fd);
    this.end += 4 + body.length + 32;
    return { place, files };
  }

  /** Closes the journal; removes it when nothing was edited under it (nothing to commit or undo). */
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    if (this.path !== null && this.edited === 0) {
      try {
        unlinkSync(this.path);
        syncDir(dirname(this.path));
      } catch {
        // already gone
      }
      this.path = null;
    }
  }

  /**
   * Creates the journal in the directory of the first of `items` where that is possible (the
   * next run over the tree finds it there): a directory the user cannot write to, or on a
   * read-only mount, passes to the next item's. When none can hold it, nothing is edited: an
   * IO_WRITE error that says why.
   */
  private createNear(items: InPlaceItem[]): void {
    const dirs = [...new Set(items.map((it) => dirname(it.path)))];
    let first: NodeJS.ErrnoException | null = null;
    for (const dir of dirs) {
      try {
        this.create(dir);
        return;
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (typeof e?.code !== "string") throw err;
        first ??= e;
      }
    }
    const where = dirs.length === 1 ? dirs[0]! : `${dirs[0]!} (nor in the ${dirs.length - 1} other directories of the group)`;
    const why = "--in-place writes its journal next to the files it edits before it changes a byte, so their directory must be writable";
    throw explained(first, ErrorCode.IO_WRITE, `Cannot create the undo journal in ${where}`, why);
  }

  private create(dir: string): void {
    for (;;) {
      counter++;
      const path = join(dir, `.elfpatch-${process.pid}-${threadId}-${counter}${UNDO_SUFFIX}`);
      try {
        this.fd = openSync(path, "wx", 0o600);
        this.path = path;
        break;
      } catch (err) {
        // A journal of an earlier process that had this pid, outside the batch: never overwritten.
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    }
    try {
      writeFully(this.fd, MAGIC, 0);
      this.end = MAGIC.length;
      // The records are synced as they come; the journal's name, once, here.
      fsyncSync(this.fd);
      syncDir(dir);
    } catch (err) {
      // (e.g. a full disk): no journal rather than a partial one.
      closeSync(this.fd);
      this.fd = -1;
      try {
        unlinkSync(this.path!);
      } catch {
        // already gone
      }
      this.path = null;
      throw err;
    }
  }
}

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
      // The original bytes of every range written are known: journal the changed ones.
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

/** A record's body. */
function encodeBody(files: JournalFile[]): Buffer {
  const paths = files.map((f) => Buffer.from(f.file, "utf8"));
  let len = 4;
  files.forEach((f, i) => {
    len += 4 + paths[i]!.length + 8 + 4;
    for (const b of f.blocks) len += 12 + b.data.length;
  });
  const buf = Buffer.allocUnsafe(len);
  let at = buf.writeUInt32LE(files.length, 0);
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
  return buf;
}

const malformed = (): never => {
  throw new ElfPatchError(ErrorCode.IO_WRITE, "Undo journal is malformed; can't roll back");
};

/** A record's files (its body checked by its checksum already). */
function decodeBody(raw: Buffer): JournalFile[] {
  let at = 0;
  const need = (n: number): void => void (at + n > raw.length && malformed());
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

/**
 * The complete records of a journal from offset `from` on (each with its offset), in order; a
 * record whose checksum does not hold ends them (it was being written: nothing of it was done).
 * Throws for a journal this version cannot apply.
 */
function readRecords(raw: Buffer, from = MAGIC.length): { at: number; files: JournalFile[] }[] {
  if (raw.length >= MAGIC.length && raw.subarray(0, MAGIC.length).equals(MAGIC)) {
    const out: { at: number; files: JournalFile[] }[] = [];
    for (let at = from; at + 4 <= raw.length; ) {
      const len = raw.readUInt32LE(at);
      if (at + 4 + len + 32 > raw.length) break;
      const body = raw.subarray(at + 4, at + 4 + len);
      if (!createHash("sha256").update(body).digest().equals(raw.subarray(at + 4 + len, at + 4 + len + 32))) break;
      out.push({ at, files: decodeBody(body) });
      at += 4 + len + 32;
    }
    return out;
  }
  if (raw.length < MAGIC.length && MAGIC.subarray(0, raw.length).equals(raw)) return []; // its magic was being written
  // Format 2: a SHA-256 line, then JSON {version: 2, files: [{file, size, blocks: [{offset, data (base64)}]}]}.
  const text = raw.toString("utf8");
  const nl = text.indexOf("\n");
  const body = text.slice(nl + 1);
  if (nl <= 0 || createHash("sha256").update(body).digest("hex") !== text.slice(0, nl)) return [];
  let parsed: { version: number; files: { file: string; size: number; blocks: { offset: number; data: string }[] }[] };
  try {
    parsed = JSON.parse(body) as typeof parsed;
  } catch {
    return [];
  }
  if (parsed.version !== 2) {
    // Complete but of a format this version cannot apply: keep it, and say so.
    throw new ElfPatchError(ErrorCode.IO_WRITE, "Undo journal of an unsupported version; can't roll back");
  }
  const files = parsed.files.map((f) => ({ file: f.file, size: f.size, blocks: f.blocks.map((b) => ({ offset: b.offset, data: Buffer.from(b.data, "base64") })) }));
  return [{ at: 0, files }];
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
 * A file whose rollback failed (an I/O error just after its edit) keeps its undo record in a
 * journal of its own, which no commit removes: the next run (or `elfpatch recover`) rolls it back.
 */
function keepForRecovery(dir: string, f: JournalFile): void {
  try {
    const j = new UndoJournal();
    j.append([{ path: join(dir, f.file), edits: [], newSize: f.size, size: f.size, undo: f.blocks }]);
    j.edited = 1; // (kept: no commit removes it)
    j.close();
  } catch {
    // Nothing more can be done here; the shared journal still holds the record until the commit.
  }
}

/** Why a file cannot be edited in place, for the errors of `open(O_RDWR)` a user can act on. */
const OPEN_REFUSED: Record<string, string> = {
  EACCES: "--in-place edits the file itself, so it must be writable to this user (without --in-place, a new version " +
    "is renamed over it, which needs only its directory to be writable)",
  EPERM: "--in-place edits the file itself, and the file is immutable or append-only",
  EROFS: "the file system is mounted read-only",
  ETXTBSY: "a running program: its file cannot be written while it runs (without --in-place, a new version is " +
    "renamed over it and the running process keeps the old one)",
};

function openForEdit(path: string): number {
  try {
    return openSync(path, "r+");
  } catch (err) {
    throw explained(err, ErrorCode.IO_OPEN, "Cannot open the file for writing", OPEN_REFUSED);
  }
}

/**
 * Edits every item's file in place under one undo record, appended to `journal` (a batch thread's
 * journal) or to a journal of its own. A file whose size or change time is no longer the planned
 * one, or that cannot be opened for writing, gets its error and is left out of the record. Returns,
 * per item, null (done) or the error that made it roll back (the other items are unaffected), and
 * the journal to commit: with `defer`, the edited files are not synced one by one and the journal
 * stays for `commitJournals` to make everything durable at once at the end of the batch (a group
 * commit); without, each file is synced and a journal of its own removed.
 */
export function writeEditsInPlace(
  items: InPlaceItem[],
  defer = false,
  announce?: (place: RecordPlace) => void,
  journal?: UndoJournal,
): { errors: (ErrorRecord | null)[]; journal: string | null } {
  const errors: (ErrorRecord | null)[] = items.map(() => null);
  const fds: number[] = items.map(() => -1);
  try {
    // Opened and checked first: a file another writer changed since it was planned, or a running
    // program (ETXTBSY), is not touched and stays out of the undo record.
    const ready: number[] = [];
    items.forEach((it, i) => {
      try {
        fds[i] = openForEdit(it.path);
        if (it.size !== undefined) checkUnchanged(fstatSync(fds[i]!), { size: it.size, ...(it.ctimeMs !== undefined ? { ctimeMs: it.ctimeMs } : {}) });
        ready.push(i);
      } catch (err) {
        errors[i] = toErrorRecord(err);
      }
    });
    if (ready.length === 0) return { errors, journal: null };
    const j = journal ?? new UndoJournal(announce);
    let files: JournalFile[];
    try {
      ({ files } = j.append(ready.map((i) => items[i]!)));
    } catch (err) {
      // No undo record, so no byte of these files was changed: each fails, the batch goes on.
      const error = toErrorRecord(err);
      for (const i of ready) errors[i] = error;
      if (journal === undefined) j.close();
      return { errors, journal: null };
    }
    const dir = j.dir!;
    ready.forEach((i, k) => {
      const it = items[i]!;
      const fd = fds[i]!;
      try {
        writeEdits(fd, it.edits, it.size, it.newSize);
        it.verify?.(fd, it.newSize);
        if (!defer) fdatasyncSync(fd);
      } catch (err) {
        errors[i] = toErrorRecord(err);
        try {
          rollBack(dir, files[k]!);
        } catch {
          keepForRecovery(dir, files[k]!);
        }
      }
    });
    const edited = ready.filter((i) => errors[i] === null).length;
    j.edited += edited;
    const path = j.path;
    if (journal === undefined) {
      // A journal of its own: done with it now (each file synced), unless a group commit is to end it.
      j.close();
      if (!defer && edited > 0) {
        unlinkSync(path!);
        syncDir(dir);
        return { errors, journal: null };
      }
    }
    return { errors, journal: edited > 0 ? path : null };
  } finally {
    for (const fd of fds) if (fd >= 0) closeSync(fd);
  }
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

/**
 * Rolls every file of the journal's complete records back to its original bytes, then removes
 * the journal (one with no complete record was being started: no file was touched).
 */
export function recoverJournal(journal: string): { files: string[]; outcome: RecoverOutcome } {
  const records = readRecords(readFileSync(journal));
  const dir = dirname(journal);
  const done: string[] = [];
  for (const r of records) for (const f of r.files) done.push(rollBack(dir, f));
  unlinkSync(journal);
  syncDir(dir);
  return { files: done, outcome: records.length ? "rolled-back" : "discarded" };
}

/**
 * Undoes the record at `at` of a journal whose thread died while working on that record's files
 * (the record is its thread's last): its files are rolled back and the journal is cut there (and
 * removed when nothing is left before it). Earlier records stay for the batch's commit.
 */
export function undoRecord(journal: string, at: number): string[] {
  const raw = readFileSync(journal);
  const records = readRecords(raw, at);
  const dir = dirname(journal);
  const done: string[] = [];
  for (const r of records) for (const f of r.files) done.push(rollBack(dir, f));
  if (at <= MAGIC.length) {
    unlinkSync(journal);
    syncDir(dir);
  } else {
    const fd = openSync(journal, "r+");
    try {
      ftruncateSync(fd, at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  return done;
}
