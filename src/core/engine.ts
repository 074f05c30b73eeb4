/**
 * One instance of the Wasm core and the host half of its protocol: give the core the ranges it
 * asks for (read straight into its memory, never the whole file), collect its records, and turn
 * statuses into error records. A trap (a core bug) discards the instance; the next call gets a
 * fresh one from the shared compiled module.
 */
import { fstatSync, readSync } from "node:fs";
import { ElfPatchError, ErrorCode, statusToError } from "../errors.js";
import { ParseFlag } from "../shared/abi.js";
import { Status } from "../shared/status.js";
import { decodeInfo } from "./decode.js";
import { coreModule, type CoreFlavor } from "./module.js";
import { encodeRequest, isNoopFor } from "./request.js";
import type { Edit, EditRequest, ElfInfo, Strategy, UndoRun } from "./types.js";

const STRATEGIES: Strategy[] = ["in-place", "slack", "tail", "new-segment"];

interface CoreExports {
  memory: WebAssembly.Memory;
  beginJob(size: number): void;
  provide(off: number, len: number): number;
  needOff(): number;
  needLen(): number;
  parse(flags: number): number;
  infoPtr(): number;
  infoLen(): number;
  requestAlloc(len: number): number;
  plan(reqLen: number, allowGrowth: number): number;
  newSize(): number;
  strategy(): number;
  movedBytes(): number;
  editsPtr(): number;
  editsLen(): number;
  fixupsPtr(): number;
  fixupsLen(): number;
  verifyPlan(): number;
  undoPtr(): number;
  undoLen(): number;
}

/** Where the core's bytes come from: an open file (never read whole) or a buffer (tests). */
export interface ByteSource {
  size: number;
  /** Fills `dst` with the file bytes starting at `off`; throws when they are not there. */
  read(dst: Uint8Array, off: number): void;
}

export function fdSource(fd: number, size = fstatSync(fd).size): ByteSource {
  return {
    size,
    read(dst, off) {
      let done = 0;
      while (done < dst.length) {
        const n = readSync(fd, dst, done, dst.length - done, off + done);
        if (n === 0) throw new ElfPatchError(ErrorCode.ELF_TRUNCATED, "File changed size while being read");
        done += n;
      }
    },
  };
}

export function bufferSource(buf: Uint8Array): ByteSource {
  return {
    size: buf.length,
    read(dst, off) {
      if (off + dst.length > buf.length) throw new ElfPatchError(ErrorCode.ELF_TRUNCATED, "Read past the end");
      dst.set(buf.subarray(off, off + dst.length));
    },
  };
}

export interface PlannedEdits {
  before: ElfInfo;
  edits: Edit[];
  newSize: number;
  strategy: Strategy;
  /** Bytes of sections moved out of the way of a growing program header table (part of bytes added). */
  movedBytes: number;
  /** The original bytes of every byte run of the file the edits change (for undo journals). */
  undo: UndoRun[];
  /**
   * The planned file as the core parses it before anything is written (what it will say), or
   * undefined when that needed bytes the plan had not loaded: then the written file is checked.
   */
  after?: ElfInfo;
}

/** The first read of every file: covers the headers (and all tables of a small library) at once. */
const PREFIX = 16 * 1024;
/** A file up to this size is read whole at once (an extension module's tables are spread over it). */
const WHOLE = 64 * 1024;
/** A parse needing more rounds than this is a core bug, not a property of the file. */
const MAX_ROUNDS = 64;

export class CoreEngine {
  private core: CoreExports | null = null;

  constructor(private readonly module: WebAssembly.Module = coreModule()) {}

  /** Bytes of Wasm memory the core instance holds now (0 before its first use). */
  memoryBytes(): number {
    return this.core ? this.core.memory.buffer.byteLength : 0;
  }

  static create(flavor: CoreFlavor = "release"): CoreEngine {
    return new CoreEngine(coreModule(flavor));
  }

  private instance(): CoreExports {
    if (!this.core) {
      const abort = (): never => {
        throw new ElfPatchError(ErrorCode.INTERNAL, "Core aborted");
      };
      const inst = new WebAssembly.Instance(this.module, { env: { abort } });
      this.core = inst.exports as unknown as CoreExports;
    }
    return this.core;
  }

  /** Runs `fn` against the core; any trap discards the instance and becomes an INTERNAL error. */
  private guarded<T>(fn: (core: CoreExports) => T): T {
    const core = this.instance();
    try {
      return fn(core);
    } catch (err) {
      this.core = null;
      if (err instanceof ElfPatchError && err.code !== ErrorCode.INTERNAL) throw err;
      throw new ElfPatchError(ErrorCode.INTERNAL, `Core trapped: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Parses `src`: returns the status and, on success, the info record. */
  /**
   * Parses `src`: returns the status and, on success, the info record (without version names
   * when `versions` is false).
   */
  parse(src: ByteSource, path: string, flags: number, fresh = true, decode = true, versions = true): { status: Status; info?: ElfInfo } {
    const size = src.size;
    return this.guarded((core) => {
      if (fresh) {
        core.beginJob(size);
        const first = size <= WHOLE ? size : PREFIX;
        if (first > 0) readRange(core, src, 0, first);
      }
      let status = core.parse(flags) as Status;
      for (let round = 0; status === Status.NeedRange; round++) {
        if (round >= MAX_ROUNDS) throw new ElfPatchError(ErrorCode.INTERNAL, "Core asked for too many ranges");
        readRange(core, src, core.needOff(), core.needLen());
        status = core.parse(flags) as Status;
      }
      if (status !== Status.Ok) return { status };
      if (!decode) return { status };
      const mem = new Uint8Array(core.memory.buffer, core.infoPtr(), core.infoLen());
      return { status, info: decodeInfo(path, size, mem, versions) };
    });
  }

  inspect(src: ByteSource, path: string): ElfInfo {
    const r = this.parse(src, path, 0);
    if (!r.info) throw statusError(r.status);
    return r.info;
  }

  /**
   * Plans `req`: the info before, the byte-exact edits (empty for a no-op), the new size and how
   * the edits fit. With `grow: false`, an edit that does not fit in place fails (ELF_NO_ROOM).
   * A light parse comes first: a request that changes nothing is answered without reading the
   * symbol tables or running the planner (what makes re-runs cheap). `versions: false`: `before`
   * and `after` come without version names (for callers that only need the dynamic entries).
   */
  plan(
    src: ByteSource,
    path: string,
    req: EditRequest | ((before: ElfInfo) => EditRequest),
    grow = true,
    versions = true,
  ): PlannedEdits {
    // Without version names, the light parse leaves the version tables unread too (the full
    // parse below reads them, for a request that changes something).
    const light = this.parse(src, path, versions ? 0 : ParseFlag.NoVersions, true, true, versions);
    if (!light.info) throw statusError(light.status);
    const before = light.info;
    const request = typeof req === "function" ? req(before) : req;
    if (isNoopFor(request, before)) return { before, edits: [], newSize: before.size, strategy: "in-place", movedBytes: 0, undo: [] };
    // The full parse (symbol tables too) for the planner; its info record is the light one's again.
    let r = this.parse(src, path, ParseFlag.Refs, false, false);
    if (r.status !== Status.Ok) throw statusError(r.status);
    const blob = encodeRequest(request);
    for (let round = 0; ; round++) {
      const status = this.guarded((core) => {
        const ptr = core.requestAlloc(blob.length);
        new Uint8Array(core.memory.buffer, ptr, blob.length).set(blob);
        const s = core.plan(blob.length, grow ? 1 : 0) as Status;
        // The layout needed more of the file (e.g. all of .symtab): read it, parse again, plan again.
        if (s === Status.NeedRange) readRange(core, src, core.needOff(), core.needLen());
        return s;
      });
      if (status === Status.NeedRange) {
        if (round >= MAX_ROUNDS) throw new ElfPatchError(ErrorCode.INTERNAL, "Core asked for too many ranges");
        r = this.parse(src, path, ParseFlag.Refs, false, false);
        if (r.status !== Status.Ok) throw statusError(r.status);
        continue;
      }
      if (status !== Status.Ok) throw statusError(status);
      const planned = this.guarded((core) => {
        const newSize = core.newSize();
        const out: PlannedEdits & { fixups: SymtabFixups | null } = {
          before,
          edits: decodeEdits(core.memory.buffer, core.editsPtr(), core.editsLen()),
          newSize,
          strategy: STRATEGIES[core.strategy()] ?? "in-place",
          movedBytes: core.movedBytes(),
          undo: decodeUndo(core.memory.buffer, core.undoPtr(), core.undoLen()),
          fixups: decodeFixups(core.memory.buffer, core.fixupsPtr(), core.fixupsLen()),
        };
        // The planned file, parsed before anything is written.
        const v = core.verifyPlan() as Status;
        if (v === Status.Ok) out.after = decodeInfo(path, newSize, new Uint8Array(core.memory.buffer, core.infoPtr(), core.infoLen()), versions);
        else if (v !== Status.NeedRange) {
          // (A hostile file can parse and yet make an edited version that does not: refused, as
          // the written file used to be when it was parsed after writing.)
          const e = statusError(v);
          throw new ElfPatchError(e.code, `The edited file would not parse: ${e.message}`);
        }
        return out;
      });
      const { fixups, ...out } = planned;
      if (fixups !== null) {
        const host = symtabEdits(src, before, fixups);
        for (const e of host) out.undo.push({ offset: e.offset, data: e.orig! });
        out.edits = withEdits(out.edits, host);
      }
      return out;
    }
  }
}

/** `.symtab` moves the core left to the host: where the table is, and each section's delta. */
export interface SymtabFixups {
  off: number;
  count: number;
  /** Section index -> delta (summed, unsigned 64-bit). */
  deltas: Map<number, bigint>;
}

function decodeFixups(buffer: ArrayBuffer, ptr: number, len: number): SymtabFixups | null {
  if (len < 16) return null;
  const view = new DataView(buffer, ptr, len);
  const deltas = new Map<number, bigint>();
  for (let at = 16; at + 12 <= len; at += 12) {
    const index = view.getUint32(at, true);
    const delta = BigInt(view.getUint32(at + 4, true)) | (BigInt(view.getUint32(at + 8, true)) << 32n);
    deltas.set(index, BigInt.asUintN(64, (deltas.get(index) ?? 0n) + delta));
  }
  return deltas.size ? { off: view.getFloat64(0, true), count: view.getFloat64(8, true), deltas } : null;
}

/** Entries of `.symtab` read per window when applying its moves. */
const SYMTAB_WINDOW = 16384;
/**
 * Most `.symtab` symbols one plan moves: a real file has a handful in a moved section (section
 * symbols, `__abi_tag`, `_DYNAMIC`); a table crafted to have millions is refused, not held.
 */
const MAX_SYMTAB_MOVES = 65536;

/**
 * The edits that move `.symtab` symbols with their sections: the table is streamed in windows
 * (never held whole), and each symbol defined in a moved section (`st_shndx`) gets its `st_value`
 * plus the section's delta, modulo the class's word (as ld.so and the core compute addresses).
 */
export function symtabEdits(
  src: ByteSource,
  info: Pick<ElfInfo, "class" | "endian">,
  f: SymtabFixups,
  window = SYMTAB_WINDOW,
): Edit[] {
  const is64 = info.class === 64;
  const le = info.endian === "little";
  const ent = is64 ? 24 : 16;
  const shndxAt = is64 ? 6 : 14;
  const valueAt = is64 ? 8 : 4;
  const word = is64 ? 8 : 4;
  const buf = new Uint8Array(Math.min(window, Math.max(1, f.count)) * ent);
  const view = new DataView(buf.buffer);
  // Section indices read straight from the window where the file's byte order is this machine's
  // (every entry's st_shndx is 2-byte aligned in it), through the DataView otherwise.
  const native = le === (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1);
  const u16 = native ? new Uint16Array(buf.buffer) : null;
  // Which section indices moved (st_shndx is 16 bits: an index past that moves no symbol).
  let top = 0;
  for (const i of f.deltas.keys()) if (i <= 0xffff && i > top) top = i;
  const moved = new Uint8Array(top + 1);
  for (const i of f.deltas.keys()) if (i <= 0xffff) moved[i] = 1;
  const out: Edit[] = [];
  // Entry 0 is the null symbol.
  for (let first = 1; first < f.count; ) {
    const n = Math.min(window, f.count - first);
    const win = buf.subarray(0, n * ent);
    src.read(win, f.off + first * ent);
    for (let k = 0; k < n; k++) {
      const o = k * ent;
      const index = u16 !== null ? u16[(o + shndxAt) >> 1]! : view.getUint16(o + shndxAt, le);
      if (index > top || moved[index] === 0) continue;
      const delta = f.deltas.get(index)!;
      if (out.length >= MAX_SYMTAB_MOVES) throw new ElfPatchError(ErrorCode.ELF_TOO_LARGE, "Too many .symtab symbols in moved sections");
      const bytes = new Uint8Array(word);
      const nv = new DataView(bytes.buffer);
      if (is64) nv.setBigUint64(0, BigInt.asUintN(64, view.getBigUint64(o + valueAt, le) + delta), le);
      else nv.setUint32(0, Number(BigInt.asUintN(32, BigInt(view.getUint32(o + valueAt, le)) + delta)), le);
      out.push({ offset: f.off + (first + k) * ent + valueAt, bytes, orig: win.slice(o + valueAt, o + valueAt + word) });
    }
    first += n;
  }
  return out;
}

/**
 * The core's edits and the host's, in file order. The core leaves `.symtab` alone, but one of its
 * writes may span unchanged bytes that hold `.symtab` entries (it joins nearby changes into one
 * write): a host edit inside such a write is applied to that write's bytes instead.
 */
function withEdits(core: Edit[], host: Edit[]): Edit[] {
  if (host.length === 0) return core;
  const out: Edit[] = [];
  let k = 0;
  for (const h of host) {
    while (k < core.length && core[k]!.offset + core[k]!.bytes.length <= h.offset) out.push(core[k++]!);
    const c = core[k];
    const end = h.offset + h.bytes.length;
    if (c !== undefined && c.offset <= h.offset && end <= c.offset + c.bytes.length) {
      c.bytes.set(h.bytes, h.offset - c.offset);
      continue;
    }
    if (c !== undefined && c.offset < end) throw new ElfPatchError(ErrorCode.INTERNAL, "Planned edits overlap the symbol table's");
    out.push(h);
  }
  while (k < core.length) out.push(core[k++]!);
  return out;
}

function statusError(status: Status): ElfPatchError {
  const e = statusToError(status);
  return new ElfPatchError(e.code, e.message);
}

/** Reads `[off, off+len)` of the file straight into the memory the core allots for it. */
function readRange(core: CoreExports, src: ByteSource, off: number, len: number): void {
  const ptr = core.provide(off, len);
  src.read(new Uint8Array(core.memory.buffer, ptr, len), off); // fresh view: memory may have grown
}

/**
 * Reads byte runs from records of `stride` bytes that start `[f64 off][u32 len][u32 ptr]`, `ptr`
 * pointing into the core's memory: the bytes of all runs are copied out into one buffer.
 */
function decodeRuns(buffer: ArrayBuffer, ptr: number, len: number, stride: number): { offset: number; bytes: Uint8Array }[] {
  const view = new DataView(buffer, ptr, len);
  const mem = new Uint8Array(buffer);
  let total = 0;
  for (let at = 0; at + stride <= len; at += stride) total += view.getUint32(at + 8, true);
  const copy = new Uint8Array(total);
  const out: { offset: number; bytes: Uint8Array }[] = [];
  let to = 0;
  for (let at = 0; at + stride <= len; at += stride) {
    const n = view.getUint32(at + 8, true);
    const p = view.getUint32(at + 12, true);
    copy.set(mem.subarray(p, p + n), to);
    out.push({ offset: view.getFloat64(at, true), bytes: copy.subarray(to, to + n) });
    to += n;
  }
  return out;
}

/** Reads the edit list: `[f64 off][u32 len][u32 ptr][u32 0][u32 0]` records. */
function decodeEdits(buffer: ArrayBuffer, ptr: number, len: number): Edit[] {
  return decodeRuns(buffer, ptr, len, 24);
}

/** Reads the undo runs: `[f64 off][u32 len][u32 orig]` records (the original bytes). */
function decodeUndo(buffer: ArrayBuffer, ptr: number, len: number): UndoRun[] {
  return decodeRuns(buffer, ptr, len, 16).map((r) => ({ offset: r.offset, data: r.bytes }));
}
