/**
 * The loader's symbol-version check (loader.md §13, `_dl_check_map_versions`), run after the whole
 * tree is mapped: for every object and every file in its Verneed, the object known by that name
 * must define each required version in its Verdef. A provider without any Verdef only earns the
 * warning "no version information available"; a missing version marked `VER_FLG_WEAK` is not an
 * error. The core does not report the weak flag, so the few Verneed entries that are missing are
 * looked up here in the file's `.gnu.version_r` (through program headers only, as `ld.so` reads it).
 */
import { closeSync, openSync, readSync } from "node:fs";
import { noteConsulted } from "../shared/consulted.js";
import type { LoadedObject, LoadSet } from "./load-set.js";

export interface VersionGap {
  requirer: LoadedObject;
  /** The Verneed file name (normally the DT_NEEDED string). */
  file: string;
  provider: LoadedObject;
  version: string;
}

export interface VersionReport {
  gaps: VersionGap[];
  warnings: string[];
}

export function versionMessage(g: VersionGap): string {
  return `${g.provider.path}: version \`${g.version}' not found (required by ${g.requirer.path})`;
}

/** Checks every object of `set` that was loaded for this tree (not the preloaded ones). */
export function checkVersions(set: LoadSet, hostPath: (obj: LoadedObject) => string): VersionReport {
  const out: VersionReport = { gaps: [], warnings: [] };
  for (const obj of set.objects) {
    if (obj.preloaded || !obj.info) continue;
    let weak: Set<string> | null = null;
    for (const [file, versions] of Object.entries(obj.info.versionNeeds)) {
      const provider = set.lookup(file);
      if (!provider?.info) continue;
      const defs = provider.info.versionDefs;
      if (defs.length === 0) {
        out.warnings.push(`${provider.path}: no version information available (required by ${obj.path})`);
        continue;
      }
      for (const version of versions) {
        if (defs.includes(version)) continue;
        weak ??= weakNeeds(hostPath(obj));
        if (!weak.has(`${file}\0${version}`)) out.gaps.push({ requirer: obj, file, provider, version });
      }
    }
  }
  return out;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT_STRTAB = 5n;
const DT_STRSZ = 10n;
const DT_VERNEED = 0x6ffffffen;
const DT_VERNEEDNUM = 0x6fffffffn;
const VER_FLG_WEAK = 2;
const MAX_TABLE = 64 << 20;

/** `file\0version` for every Vernaux marked weak (ELF64 little endian; empty when unreadable). */
export function weakNeeds(path: string): Set<string> {
  const out = new Set<string>();
  let fd: number;
  noteConsulted(path);
  try {
    fd = openSync(path, "r");
  } catch {
    return out;
  }
  try {
    readWeak(fd, out);
  } catch {
    // A table the core could read but this reader cannot: treat every entry as non-weak.
  } finally {
    closeSync(fd);
  }
  return out;
}

function readAt(fd: number, off: number, len: number): Buffer {
  if (len < 0 || len > MAX_TABLE) throw new RangeError("table too large");
  const b = Buffer.alloc(len);
  if (readSync(fd, b, 0, len, off) !== len) throw new RangeError("short read");
  return b;
}

function readWeak(fd: number, out: Set<string>): void {
  const eh = readAt(fd, 0, 64);
  const phoff = Number(eh.readBigUInt64LE(32));
  const phnum = eh.readUInt16LE(56);
  const ph = readAt(fd, phoff, phnum * 56);
  const loads: [number, number, number][] = [];
  let dyn: [number, number] | null = null;
  for (let i = 0; i < phnum; i++) {
    const t = ph.readUInt32LE(i * 56);
    const off = Number(ph.readBigUInt64LE(i * 56 + 8));
    const vaddr = Number(ph.readBigUInt64LE(i * 56 + 16));
    const filesz = Number(ph.readBigUInt64LE(i * 56 + 32));
    if (t === PT_LOAD) loads.push([vaddr, off, filesz]);
    if (t === PT_DYNAMIC) dyn = [off, filesz];
  }
  if (!dyn) return;
  const toOff = (a: number): number => {
    const l = loads.find(([va, , sz]) => a >= va && a < va + sz);
    if (!l) throw new RangeError("unmapped address");
    return a - l[0] + l[1];
  };
  const d = readAt(fd, dyn[0], dyn[1]);
  const tags = new Map<bigint, number>();
  for (let at = 0; at + 16 <= d.length; at += 16) {
    const tag = d.readBigInt64LE(at);
    if (tag === 0n) break;
    tags.set(tag, Number(d.readBigUInt64LE(at + 8)));
  }
  const strtab = tags.get(DT_STRTAB);
  const verneed = tags.get(DT_VERNEED);
  if (strtab === undefined || verneed === undefined) return;
  const str = readAt(fd, toOff(strtab), tags.get(DT_STRSZ) ?? 0);
  const cstr = (i: number): string => str.toString("utf8", i, str.indexOf(0, i));
  let vn = toOff(verneed);
  for (let n = tags.get(DT_VERNEEDNUM) ?? 0; n > 0; n--) {
    const h = readAt(fd, vn, 16);
    const file = cstr(h.readUInt32LE(4));
    let aux = vn + h.readUInt32LE(8);
    for (let k = h.readUInt16LE(2); k > 0; k--) {
      const a = readAt(fd, aux, 16);
      if (a.readUInt16LE(4) & VER_FLG_WEAK) out.add(`${file}\0${cstr(a.readUInt32LE(8))}`);
      const next = a.readUInt32LE(12);
      if (next === 0) break;
      aux += next;
    }
    const next = h.readUInt32LE(12);
    if (next === 0) break;
    vn += next;
  }
}
