/**
 * Reads the symbol version tables through `DT_VERNEED`/`DT_VERNEEDNUM` and
 * `DT_VERDEF`/`DT_VERDEFNUM`, as ld.so does. Chains are followed by their `*_next` offsets,
 * bounded by the declared counts and by a total budget, so hostile loops end with a status.
 */
import { Status } from "../../src/shared/status";
import { DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM } from "../elf/constants";
import { Elf, Verneed } from "./model";

/** Most entries (all levels together) read from one version table. */
const MAX_ENTRIES: u32 = 1 << 16;

export function parseVersions(elf: Elf): void {
  parseVerneed(elf);
  if (elf.img.ok) parseVerdef(elf);
}

function tableOff(elf: Elf, addrTag: u64): u64 {
  const addr = elf.dynVal(addrTag, u64.MAX_VALUE);
  if (addr == u64.MAX_VALUE) return u64.MAX_VALUE;
  const off = elf.offFromAddr(addr, 1);
  if (off == u64.MAX_VALUE) elf.img.fail(Status.UnmappedAddress);
  return off;
}

function checkName(elf: Elf, idx: u32): bool {
  if (elf.strLen(idx) < 0) {
    elf.img.fail(Status.BadVersionTable);
    return false;
  }
  return true;
}

function parseVerneed(elf: Elf): void {
  const img = elf.img;
  let o = tableOff(elf, DT_VERNEED);
  if (o == u64.MAX_VALUE) return;
  const count = <u32>elf.dynVal(DT_VERNEEDNUM, 0);
  elf.verneedOff = o;
  let budget = MAX_ENTRIES;
  for (let i: u32 = 0; i < count; i++) {
    elf.verneedEntries.push(o);
    // Elf_Verneed: u16 vn_version, vn_cnt; u32 vn_file, vn_aux, vn_next (16 bytes, both classes)
    if (!img.at(o, 16)) return;
    if (img.u16(o) != 1 || budget == 0) {
      img.fail(Status.BadVersionTable);
      return;
    }
    budget--;
    const cnt = img.u16(o + 2);
    const file = img.u32(o + 4);
    if (!checkName(elf, file)) return;
    const vn = new Verneed(o + 4, file);
    let a = o + <u64>img.u32(o + 8);
    for (let j: u32 = 0; j < cnt; j++) {
      elf.verneedEntries.push(a);
      // Elf_Vernaux: u32 vna_hash; u16 vna_flags, vna_other; u32 vna_name, vna_next (16 bytes)
      if (!img.at(a, 16)) return;
      if (budget == 0) {
        img.fail(Status.BadVersionTable);
        return;
      }
      budget--;
      const name = img.u32(a + 8);
      if (!checkName(elf, name)) return;
      vn.names.push(name);
      vn.hashes.push(img.u32(a));
      vn.flags.push(img.u16(a + 4));
      vn.others.push(img.u16(a + 6));
      const next = img.u32(a + 12);
      if (next == 0) break;
      a += <u64>next;
    }
    elf.verneeds.push(vn);
    const next = img.u32(o + 12);
    if (next == 0) break;
    o += <u64>next;
  }
}

function parseVerdef(elf: Elf): void {
  const img = elf.img;
  let o = tableOff(elf, DT_VERDEF);
  if (o == u64.MAX_VALUE) return;
  const count = <u32>elf.dynVal(DT_VERDEFNUM, 0);
  let budget = MAX_ENTRIES;
  for (let i: u32 = 0; i < count; i++) {
    // Elf_Verdef: u16 vd_version, vd_flags, vd_ndx, vd_cnt; u32 vd_hash, vd_aux, vd_next (20 bytes)
    if (!img.at(o, 20)) return;
    if (img.u16(o) != 1 || budget == 0) {
      img.fail(Status.BadVersionTable);
      return;
    }
    budget--;
    const cnt = img.u16(o + 6);
    let a = o + <u64>img.u32(o + 12);
    for (let j: u32 = 0; j < cnt; j++) {
      // Elf_Verdaux: u32 vda_name, vda_next (8 bytes)
      if (!img.at(a, 8)) return;
      if (budget == 0) {
        img.fail(Status.BadVersionTable);
        return;
      }
      budget--;
      const name = img.u32(a);
      if (!checkName(elf, name)) return;
      if (j == 0) elf.verdefNames.push(name);
      elf.verdefAllNames.push(name);
      const next = img.u32(a + 4);
      if (next == 0) break;
      a += <u64>next;
    }
    const next = img.u32(o + 16);
    if (next == 0) break;
    o += <u64>next;
  }
}
