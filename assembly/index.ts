/**
 * THE ABI of the core: the only file with exports. One file is one job: `beginJob` resets the
 * heap; the host `provide`s byte ranges and calls `parse` until it stops returning `NeedRange`;
 * `info*` then describe the file; `requestAlloc` + `plan` turn an edit request into the edit list
 * read through `edits*`. All values cross as numbers (f64 for file offsets and sizes).
 */
import { ParseFlag, InfoKind } from "../src/shared/abi";
import { Status } from "../src/shared/status";
import { DT_FLAGS, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME } from "./elf/constants";
import { Out } from "./elf/out";
import { Image } from "./elf/reader";
import { interpLen, parseHeader, parseSegments } from "./parse/header";
import { checkDynStrings, parseDynamic } from "./parse/dynamic";
import { Elf } from "./parse/model";
import { parseSymbolRefs } from "./parse/symbols";
import { parseVersions } from "./parse/versions";
import { Layout, planLayout } from "./plan/layout";
import { planEdits } from "./plan/plan";
import { decodeRequest } from "./plan/request";
import { Plan } from "./plan/state";
import { beginStrings } from "./plan/strtab";
import { emitEdits, emitUndo, writePlan } from "./write/emit";
import { applyLayout, writeLayout } from "./write/relocate";

let img: Image | null = null;
let elf: Elf | null = null;
let parsedFlags: u32 = 0;
let info: Out | null = null;
let edits: Out | null = null;
let reqPtr: usize = 0;
let planned: Layout | null = null;
let fixups: Out | null = null;
let undo: Out | null = null;

/** Resets the per-file heap and starts a job for a file of `size` bytes. */
export function beginJob(size: f64): void {
  heap.reset();
  img = new Image(<u64>size);
  elf = null;
  info = null;
  edits = null;
  fixups = null;
  undo = null;
  reqPtr = 0;
  planned = null;
}

/** Allocates room for file bytes `[off, off+len)`; the host copies them to the returned address. */
export function provide(off: f64, len: f64): usize {
  return img!.provide(<u64>off, <u64>len);
}

export function needOff(): f64 {
  return <f64>img!.needOff;
}

export function needLen(): f64 {
  return <f64>img!.needLen;
}

/** Parses what is needed for `flags` (see ParseFlag). Returns `NeedRange` until all bytes are present. */
export function parse(flags: u32): Status {
  const im = img!;
  im.resetWrites();
  im.status = Status.Ok;
  const e = new Elf(im);
  parseAll(e, flags);
  if (!im.ok) return im.status;
  elf = e;
  parsedFlags = flags;
  info = describe(e);
  return Status.Ok;
}

export function infoPtr(): usize {
  return info !== null ? info!.ptr : 0;
}

export function infoLen(): u32 {
  return info !== null ? <u32>info!.len : 0;
}

/** Allocates `len` bytes for the edit request blob; the host writes it there, then calls `plan`. */
export function requestAlloc(len: u32): usize {
  reqPtr = heap.alloc(len > 0 ? <usize>len : 1);
  return reqPtr;
}

/**
 * Plans the edits of the request blob (after a successful `parse(ParseFlag.Refs)`). With
 * `allowGrowth` 0, an edit that does not fit in place fails with `NoRoom`. Returns `NeedRange`
 * when the layout needs bytes the parse did not load: the host provides them, parses again and
 * plans again.
 */
export function plan(reqLen: u32, allowGrowth: u32): Status {
  const e = elf;
  if (e === null || (parsedFlags & ParseFlag.Refs) == 0 || reqPtr == 0) return Status.BadRequest;
  const req = decodeRequest(reqPtr, <usize>reqLen);
  if (req === null) return Status.BadRequest;
  e.img.resetWrites();
  e.img.status = Status.Ok;
  edits = null;
  fixups = null;
  beginStrings(e);
  const p = new Plan(e);
  p.allowGrowth = allowGrowth != 0;
  const l = new Layout();
  let s = planEdits(e, req, p);
  if (s == Status.Ok) s = planLayout(e, p, l);
  if (s == Status.Ok) {
    applyLayout(e, p, l);
    writePlan(e, p);
    writeLayout(e, p, l);
  }
  if (s == Status.Ok && !e.img.ok) s = e.img.status;
  if (s != Status.Ok) return s;
  edits = emitEdits(e.img.chunks);
  undo = emitUndo(e.img.chunks);
  fixups = emitFixups(e, p);
  planned = l;
  return Status.Ok;
}

/**
 * Parses the planned file (the bytes as the edits will leave them: what the plan wrote, and the
 * file's own bytes elsewhere) as `parse(0)` parses a file, and describes it (`info*`): a plan whose
 * result does not parse is never written, and the host learns what the file will say. Returns
 * `NeedRange` when that needs bytes the plan did not load (the host then checks the written file
 * instead); never loads anything itself.
 */
export function verifyPlan(): Status {
  const e = elf;
  if (e === null || planned === null) return Status.BadRequest;
  const im = e.img;
  const before = im.status;
  im.status = Status.Ok;
  const after = new Elf(im);
  parseAll(after, 0);
  const s = im.status;
  im.status = before;
  if (s != Status.Ok) return s;
  info = describe(after);
  return Status.Ok;
}

export function undoPtr(): usize {
  return undo !== null ? undo!.ptr : 0;
}

export function undoLen(): u32 {
  return undo !== null ? <u32>undo!.len : 0;
}

/**
 * The `.symtab` moves the host applies (Plan.symFixIndex): empty, or `[f64 symtab offset]
 * [f64 entry count]` then per move `[u32 section index][u32 delta low][u32 delta high]`.
 */
function emitFixups(e: Elf, p: Plan): Out {
  const n = p.symFixIndex.length;
  const out = new Out(n > 0 ? 16 + 12 * <usize>n : 16);
  if (n == 0) return out;
  out.f64(<f64>e.symtabOff);
  out.f64(<f64>e.symtabCount);
  for (let i = 0; i < n; i++) {
    const d = unchecked(p.symFixDelta[i]);
    out.u32(unchecked(p.symFixIndex[i]));
    out.u32(<u32>(d & 0xffffffff));
    out.u32(<u32>(d >> 32));
  }
  return out;
}

export function fixupsPtr(): usize {
  return fixups !== null ? fixups!.ptr : 0;
}

export function fixupsLen(): u32 {
  return fixups !== null ? <u32>fixups!.len : 0;
}

/** The file size after the planned edits. */
export function newSize(): f64 {
  return planned !== null ? <f64>planned!.newSize : 0;
}

/** Bytes of sections the layout moved out of the way of the program header table. */
export function movedBytes(): f64 {
  return planned !== null ? <f64>planned!.movedBytes : 0;
}

/** How the planned edits fit (plan/layout.ts Strategy). */
export function strategy(): u32 {
  return planned !== null ? <u32>planned!.strategy : 0;
}

export function editsPtr(): usize {
  return edits !== null ? edits!.ptr : 0;
}

export function editsLen(): u32 {
  return edits !== null ? <u32>edits!.len : 0;
}

function parseAll(e: Elf, flags: u32): void {
  const im = e.img;
  parseHeader(e);
  if (!im.ok) return;
  parseSegments(e);
  if (!im.ok) return;
  if (e.interpIndex >= 0) interpLen(e);
  if (!im.ok) return;
  parseDynamic(e);
  if (!im.ok) return;
  checkDynStrings(e);
  if (!im.ok) return;
  if ((flags & ParseFlag.NoVersions) == 0 || (flags & ParseFlag.Refs) != 0) parseVersions(e);
  if (!im.ok) return;
  if (flags & ParseFlag.Refs) parseSymbolRefs(e);
}

function countTag(e: Elf, tag: u64): i32 {
  let n = 0;
  for (let i = 0, m = e.dyn.length; i < m; i++) if (unchecked(e.dyn[i]).tag == tag) n++;
  return n;
}

function strRecord(out: Out, e: Elf, kind: i32, idx: u64): void {
  const n = e.strLen(idx);
  if (n >= 0) out.str(kind, e.strPtr(idx), <usize>n);
}

/** Serialises what the host reports (see InfoKind). */
function describe(e: Elf): Out {
  const out = new Out();
  out.num(InfoKind.Class, e.img.is64 ? 64 : 32);
  out.num(InfoKind.Endian, e.img.big ? 2 : 1);
  out.num(InfoKind.Machine, e.machine);
  out.num(InfoKind.Type, e.type);
  out.num(InfoKind.Entry, <f64>e.entry);
  out.num(InfoKind.OsAbi, e.osabi);
  out.num(InfoKind.HasDynamic, e.dynIndex >= 0 ? 1 : 0);
  out.num(InfoKind.HasSectionHeaders, e.hasShdrs ? 1 : 0);
  out.num(InfoKind.SpareSlots, e.dynSpare);
  out.num(InfoKind.StrSize, <f64>e.strSize);
  out.num(InfoKind.DynSize, e.dynIndex >= 0 ? <f64>unchecked(e.segments[e.dynIndex]).filesz : 0);
  out.num(InfoKind.PhdrCount, e.segments.length);
  out.num(InfoKind.RpathCount, countTag(e, DT_RPATH));
  out.num(InfoKind.RunpathCount, countTag(e, DT_RUNPATH));
  out.num(InfoKind.SonameCount, countTag(e, DT_SONAME));
  if (e.hasTag(DT_FLAGS)) out.num(InfoKind.Flags, <f64>e.dynVal(DT_FLAGS, 0));
  if (e.hasTag(DT_FLAGS_1)) out.num(InfoKind.Flags1, <f64>e.dynVal(DT_FLAGS_1, 0));
  if (e.interpIndex >= 0) {
    const s = unchecked(e.segments[e.interpIndex]);
    const n = interpLen(e);
    if (n >= 0) out.str(InfoKind.Interpreter, e.img.at(s.off, s.filesz), <usize>n);
  }
  if (e.hasTag(DT_SONAME)) strRecord(out, e, InfoKind.Soname, e.dynVal(DT_SONAME, 0));
  for (let i = 0, n = e.dyn.length; i < n; i++) {
    const d = unchecked(e.dyn[i]);
    if (d.tag == DT_NEEDED) strRecord(out, e, InfoKind.Needed, d.val);
  }
  if (e.hasTag(DT_RPATH)) strRecord(out, e, InfoKind.Rpath, e.dynVal(DT_RPATH, 0));
  if (e.hasTag(DT_RUNPATH)) strRecord(out, e, InfoKind.Runpath, e.dynVal(DT_RUNPATH, 0));
  for (let i = 0, n = e.verneeds.length; i < n; i++) {
    const v = unchecked(e.verneeds[i]);
    strRecord(out, e, InfoKind.VerneedFile, v.file);
    for (let j = 0, m = v.names.length; j < m; j++) strRecord(out, e, InfoKind.VerneedName, unchecked(v.names[j]));
  }
  for (let i = 0, n = e.verdefNames.length; i < n; i++) strRecord(out, e, InfoKind.VerdefName, unchecked(e.verdefNames[i]));
  return out;
}
