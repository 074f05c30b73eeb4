/** Decodes the core's info blob (`src/shared/abi.ts`, InfoKind) into an ElfInfo record. */
import { InfoKind } from "../shared/abi.js";
import { flags1Names, flagsNames, machineName, osabiName, typeName } from "./names.js";
import type { ElfInfo } from "./types.js";

const utf8 = new TextDecoder("utf-8", { fatal: false });

/**
 * The string in `mem[start, end)`: paths, library and version names are ASCII, one character per
 * byte (decoded without the UTF-8 decoder, whose call costs more than these short strings do);
 * anything else through the decoder (invalid sequences become U+FFFD).
 */
function text(mem: Uint8Array, start: number, end: number): string {
  if (end - start <= 128) {
    let ascii = true;
    for (let i = start; i < end; i++) {
      if (mem[i]! > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, mem.subarray(start, end) as unknown as number[]);
  }
  return utf8.decode(mem.subarray(start, end));
}

/**
 * Decodes the info blob. `versions: false` leaves `versionNeeds` and `versionDefs` empty (the
 * batch's decisions do not read them, and they are most of a library's strings).
 */
export function decodeInfo(path: string, size: number, mem: Uint8Array, versions = true): ElfInfo {
  const view = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const info: ElfInfo = {
    path, class: 64, endian: "little", machine: { number: 0, name: "" }, type: "", entry: 0, osabi: { number: 0, name: "" },
    interpreter: null, soname: null, needed: [], rpath: null, runpath: null, flags: [], flags1: [],
    hasDynamic: false, spareDynamicSlots: 0, dynstrSize: 0, dynamicSize: 0, programHeaders: 0,
    tagCounts: { rpath: 0, runpath: 0, soname: 0 }, versionNeeds: {}, versionDefs: [], hasSectionHeaders: false, size,
  };
  let lastFile: string[] | null = null;
  for (let at = 0; at + 5 <= mem.length; ) {
    const kind = mem[at] as InfoKind;
    const len = view.getUint32(at + 1, true);
    const num = len === 8 ? view.getFloat64(at + 5, true) : 0;
    const from = at + 5;
    const to = from + len;
    switch (kind) {
      case InfoKind.Class: info.class = num === 32 ? 32 : 64; break;
      case InfoKind.Endian: info.endian = num === 2 ? "big" : "little"; break;
      case InfoKind.Machine: info.machine = { number: num, name: machineName(num) }; break;
      case InfoKind.Type: info.type = typeName(num); break;
      case InfoKind.Entry: info.entry = num; break;
      case InfoKind.OsAbi: info.osabi = { number: num, name: osabiName(num) }; break;
      case InfoKind.HasDynamic: info.hasDynamic = num === 1; break;
      case InfoKind.HasSectionHeaders: info.hasSectionHeaders = num === 1; break;
      case InfoKind.SpareSlots: info.spareDynamicSlots = num; break;
      case InfoKind.StrSize: info.dynstrSize = num; break;
      case InfoKind.DynSize: info.dynamicSize = num; break;
      case InfoKind.PhdrCount: info.programHeaders = num; break;
      case InfoKind.RpathCount: info.tagCounts.rpath = num; break;
      case InfoKind.RunpathCount: info.tagCounts.runpath = num; break;
      case InfoKind.SonameCount: info.tagCounts.soname = num; break;
      case InfoKind.Flags: info.flags = flagsNames(num); break;
      case InfoKind.Flags1: info.flags1 = flags1Names(num); break;
      case InfoKind.Interpreter: info.interpreter = text(mem, from, to); break;
      case InfoKind.Soname: info.soname = text(mem, from, to); break;
      case InfoKind.Needed: info.needed.push(text(mem, from, to)); break;
      case InfoKind.Rpath: info.rpath = text(mem, from, to); break;
      case InfoKind.Runpath: info.runpath = text(mem, from, to); break;
      case InfoKind.VerneedFile: {
        if (!versions) break;
        const name = text(mem, from, to);
        lastFile = Object.hasOwn(info.versionNeeds, name) ? info.versionNeeds[name]! : (info.versionNeeds[name] = []);
        break;
      }
      case InfoKind.VerneedName: if (versions) lastFile?.push(text(mem, from, to)); break;
      case InfoKind.VerdefName: if (versions) info.versionDefs.push(text(mem, from, to)); break;
    }
    at += 5 + len;
  }
  return info;
}
