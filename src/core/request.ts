/** Encodes an EditRequest into the core's request blob (`src/shared/abi.ts`, EditOp). */
import { EditOp } from "../shared/abi.js";
import type { EditRequest, ElfInfo } from "./types.js";

const utf8 = new TextEncoder();

export function encodeRequest(req: EditRequest): Uint8Array {
  const parts: Uint8Array[] = [];
  const rec = (op: EditOp, payload: Uint8Array): void => {
    const head = new Uint8Array(5);
    head[0] = op;
    new DataView(head.buffer).setUint32(1, payload.length, true);
    parts.push(head, payload);
  };
  const str = (s: string): Uint8Array => utf8.encode(s);
  if (req.interpreter !== undefined) rec(EditOp.SetInterpreter, str(req.interpreter));
  if (req.soname !== undefined) rec(EditOp.SetSoname, str(req.soname));
  if (req.removeRpath) rec(EditOp.RemoveRpath, new Uint8Array(0));
  if (req.setRpath !== undefined) {
    const s = str(req.setRpath);
    const payload = new Uint8Array(1 + s.length);
    payload[0] = req.rpathTag === "rpath" ? 1 : 0;
    payload.set(s, 1);
    rec(EditOp.SetRpath, payload);
  }
  for (const n of req.removeNeeded ?? []) rec(EditOp.RemoveNeeded, str(n));
  for (const [o, n] of req.replaceNeeded ?? []) {
    const a = str(o);
    const b = str(n);
    const payload = new Uint8Array(4 + a.length + b.length);
    new DataView(payload.buffer).setUint32(0, a.length, true);
    payload.set(a, 4);
    payload.set(b, 4 + a.length);
    rec(EditOp.ReplaceNeeded, payload);
  }
  for (const n of req.addNeeded ?? []) rec(EditOp.AddNeeded, str(n));
  if (req.noDefaultLib) rec(EditOp.NoDefaultLib, new Uint8Array(0));
  const total = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Whether `req` would leave a file with this info unchanged, judged from the parsed dynamic info
 * alone, exactly as the core's planner decides (it then plans no edit). Lets a re-run skip the
 * symbol tables and the planner for files that are already right.
 */
export function isNoopFor(req: EditRequest, info: ElfInfo): boolean {
  const c = info.tagCounts;
  if (req.interpreter !== undefined && req.interpreter !== info.interpreter) return false;
  if (req.soname !== undefined && (c.soname !== 1 || info.soname !== req.soname)) return false;
  if (req.setRpath !== undefined) {
    const asRpath = req.rpathTag === "rpath";
    const [mine, other, value] = asRpath ? [c.rpath, c.runpath, info.rpath] : [c.runpath, c.rpath, info.runpath];
    if (mine !== 1 || other !== 0 || value !== req.setRpath) return false;
  } else if (req.removeRpath && (c.rpath !== 0 || c.runpath !== 0)) return false;
  for (const n of req.removeNeeded ?? []) if (info.needed.includes(n) || Object.hasOwn(info.versionNeeds, n)) return false;
  for (const [o, n] of req.replaceNeeded ?? []) if (o !== n && info.needed.includes(o)) return false;
  for (const n of req.addNeeded ?? []) if (!info.needed.includes(n)) return false;
  if (req.noDefaultLib && !info.flags1.includes("NODEFLIB")) return false;
  return true;
}
