/** Decodes the core's info blob (`src/shared/abi.ts`, InfoKind) into an ElfInfo record. */
import { InfoKind } from "../shared/abi.js";
import { flags1Names, flagsNames, machineName, osabiName, typeName } from "./names.js";
import type { ElfInfo } from "./types.js";

const utf8 = new TextDecoder("utf-8", { fatal: false });

export function decodeInfo(path: string, size: number, mem: Uint8Array): ElfInfo {
  const view = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const info: ElfInfo = {
    path, class: 64, endian: "little", machine: { number: 0, name: "" }, type: "", osabi: { number: 0, name: "" },
    interpreter: null, soname: null, needed: [], rpath: null, runpath: null, flags: [], flags1: [],
    hasDynamic: false, spareDynamicSlots: 0, dynstrSize: 0, dynamicSize: 0, programHeaders: 0,
    tagCounts: { rpath: 0, runpath: 0, soname: 0 }, versionNeeds: {}, versionDefs: [], hasSectionHeaders: false, size,
  };
  let lastFile: string[] | null = null;
  for (let at = 0; at + 5 <= mem.length; ) {
    const kind = mem[at] as InfoKind;
    const len = view.getUint32(at + 1, true);
    const body = mem.subarray(at + 5, at + 5 + len);
    const num = len === 8 ? view.getFloat64(at + 5, true) : 0;
    const str = (): string => utf8.decode(body);
    switch (kind) {
      case InfoKind.Class: info.class = num === 32 ? 32 : 64; break;
      case InfoKind.Endian: info.endian = num === 2 ? "big" : "little"; break;
      case InfoKind.Machine: info.machine = { number: num, name: machineName(num) }; break;
      case InfoKind.Type: info.type = typeName(num); break;
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
      case InfoKind.Interpreter: info.interpreter = str(); break;
      case InfoKind.Soname: info.soname = str(); break;
      case InfoKind.Needed: info.needed.push(str()); break;
      case InfoKind.Rpath: info.rpath = str(); break;
      case InfoKind.Runpath: info.runpath = str(); break;
      case InfoKind.VerneedFile: {
        const name = str();
        lastFile = Object.hasOwn(info.versionNeeds, name) ? info.versionNeeds[name]! : (info.versionNeeds[name] = []);
        break;
      }
      case InfoKind.VerneedName: lastFile?.push(str()); break;
      case InfoKind.VerdefName: info.versionDefs.push(str()); break;
    }
    at += 5 + len;
  }
  return info;
}
