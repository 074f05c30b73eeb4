/**
 * Decodes the host's edit request blob: records `[u8 op][u32 len LE][payload]` (see
 * `src/shared/abi.ts`). String payloads stay in place; the request holds (ptr, len) pairs.
 */
import { EditOp } from "../../src/shared/abi";

export class Str {
  constructor(public ptr: usize, public len: u64) {}
}

export class Request {
  interp: Str | null = null;
  soname: Str | null = null;
  removeRpath: bool = false;
  rpath: Str | null = null;
  rpathIsRpath: bool = false;
  removeNeeded: Str[] = [];
  replaceOld: Str[] = [];
  replaceNew: Str[] = [];
  addNeeded: Str[] = [];
  noDefaultLib: bool = false;
}

/** Returns the decoded request, or null when the blob is malformed. */
export function decodeRequest(ptr: usize, len: usize): Request | null {
  const r = new Request();
  let p = ptr;
  const end = ptr + len;
  while (p < end) {
    if (end - p < 5) return null;
    const op = <i32>load<u8>(p);
    const n = <usize>load<u32>(p + 1);
    const d = p + 5;
    if (n > end - d) return null;
    const s = new Str(d, <u64>n);
    if (op == EditOp.SetInterpreter) r.interp = s;
    else if (op == EditOp.SetSoname) r.soname = s;
    else if (op == EditOp.RemoveRpath) r.removeRpath = true;
    else if (op == EditOp.SetRpath) {
      if (n < 1) return null;
      r.rpathIsRpath = load<u8>(d) == 1;
      r.rpath = new Str(d + 1, <u64>(n - 1));
    } else if (op == EditOp.RemoveNeeded) r.removeNeeded.push(s);
    else if (op == EditOp.ReplaceNeeded) {
      if (n < 4) return null;
      const oldLen = <usize>load<u32>(d);
      if (oldLen > n - 4) return null;
      r.replaceOld.push(new Str(d + 4, <u64>oldLen));
      r.replaceNew.push(new Str(d + 4 + oldLen, <u64>(n - 4 - oldLen)));
    } else if (op == EditOp.AddNeeded) r.addNeeded.push(s);
    else if (op == EditOp.NoDefaultLib) r.noDefaultLib = true;
    else return null;
    p = d + n;
  }
  return r;
}
