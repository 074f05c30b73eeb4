/**
 * Hostile input, aimed: every structural field of real libraries (ELF header, program headers,
 * section headers, dynamic entries, the headers of the hash tables and of the version tables) set
 * to boundary values one at a time: 0, 1, all ones, the file's size and one past it, 2^31 and
 * 2^31 - 1, the value with its low bit flipped, the value plus a page. Random byte flips
 * (hostile.test.ts) rarely land on these fields in a file of any size; here each one is hit. The
 * core (debug build: every assertion on) must parse and plan each mutant without trapping, and the
 * host must answer with a status or an ElfPatchError, never anything else. Libraries: this
 * machine's libdl and libz (ELF64 little endian) and, when the cross corpus is there, i386
 * (ELF32 LE), powerpc (ELF32 big endian) and s390x (ELF64 BE) ones.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bufferSource, CoreEngine } from "../../../src/core/engine.js";
import { ElfPatchError, ErrorCode } from "../../../src/errors.js";
import { ParseFlag } from "../../../src/shared/abi.js";
import { Status } from "../../../src/shared/status.js";
import type { EditRequest } from "../../../src/core/types.js";
import { crossPackageDir } from "../../corpus/list.js";

const FILES = [
  "/usr/lib/x86_64-linux-gnu/libdl.so.2",
  "/usr/lib/x86_64-linux-gnu/libz.so.1",
  join(crossPackageDir("libc6-i386"), "lib32/libdl.so.2"),
  join(crossPackageDir("libc6-powerpc-cross"), "usr/powerpc-linux-gnu/lib/libdl.so.2"),
  join(crossPackageDir("libc6-s390x-cross"), "usr/s390x-linux-gnu/lib/libdl.so.2"),
].filter((f) => existsSync(f));

/** A request that needs new strings and a new dynamic entry (so growth paths are planned too). */
const REQUEST: EditRequest = {
  setRpath: `$ORIGIN:${"/opt/a-long-directory-name".repeat(8)}`,
  rpathTag: "rpath",
  addNeeded: ["libextra.so.1"],
  replaceNeeded: [["libc.so.6", "libc-other.so.6"]],
};

interface Field {
  what: string;
  at: number;
  size: 2 | 4 | 8;
}

/** Reads the structural fields of an ELF file (no validation: the original is well formed). */
function fieldsOf(b: Uint8Array): Field[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const is64 = b[4] === 2;
  const le = b[5] === 1;
  const w = (is64 ? 8 : 4) as 4 | 8;
  const rd = (at: number, size: number): number => (size === 2 ? dv.getUint16(at, le) : size === 4 ? dv.getUint32(at, le) : Number(dv.getBigUint64(at, le)));
  const out: Field[] = [];
  const add = (what: string, at: number, size: 2 | 4 | 8): void => {
    if (at + size <= b.length) out.push({ what, at, size });
  };
  // ELF header: e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx.
  const eh: [string, number, 2 | 4 | 8][] = is64
    ? [["e_type", 16, 2], ["e_machine", 18, 2], ["e_version", 20, 4], ["e_entry", 24, 8], ["e_phoff", 32, 8], ["e_shoff", 40, 8], ["e_flags", 48, 4],
      ["e_ehsize", 52, 2], ["e_phentsize", 54, 2], ["e_phnum", 56, 2], ["e_shentsize", 58, 2], ["e_shnum", 60, 2], ["e_shstrndx", 62, 2]]
    : [["e_type", 16, 2], ["e_machine", 18, 2], ["e_version", 20, 4], ["e_entry", 24, 4], ["e_phoff", 28, 4], ["e_shoff", 32, 4], ["e_flags", 36, 4],
      ["e_ehsize", 40, 2], ["e_phentsize", 42, 2], ["e_phnum", 44, 2], ["e_shentsize", 46, 2], ["e_shnum", 48, 2], ["e_shstrndx", 50, 2]];
  for (const [n, at, s] of eh) add(n, at, s);
  const [phoff, phnum, shoff, shnum] = is64 ? [rd(32, 8), rd(56, 2), rd(40, 8), rd(60, 2)] : [rd(28, 4), rd(44, 2), rd(32, 4), rd(48, 2)];
  const ph: [string, number, 4 | 8][] = is64
    ? [["p_type", 0, 4], ["p_flags", 4, 4], ["p_offset", 8, 8], ["p_vaddr", 16, 8], ["p_filesz", 32, 8], ["p_memsz", 40, 8], ["p_align", 48, 8]]
    : [["p_type", 0, 4], ["p_offset", 4, 4], ["p_vaddr", 8, 4], ["p_filesz", 16, 4], ["p_memsz", 20, 4], ["p_flags", 24, 4], ["p_align", 28, 4]];
  const phent = is64 ? 56 : 32;
  let dyn: { off: number; size: number } | null = null;
  for (let i = 0; i < phnum; i++) {
    const base = phoff + i * phent;
    for (const [n, at, s] of ph) add(`phdr[${i}].${n}`, base + at, s);
    if (rd(base, 4) === 2) dyn = { off: rd(base + (is64 ? 8 : 4), w), size: rd(base + (is64 ? 32 : 16), w) };
  }
  const sh: [string, number, 4 | 8][] = is64
    ? [["sh_name", 0, 4], ["sh_type", 4, 4], ["sh_flags", 8, 8], ["sh_addr", 16, 8], ["sh_offset", 24, 8], ["sh_size", 32, 8], ["sh_link", 40, 4], ["sh_info", 44, 4], ["sh_addralign", 48, 8], ["sh_entsize", 56, 8]]
    : [["sh_name", 0, 4], ["sh_type", 4, 4], ["sh_flags", 8, 4], ["sh_addr", 12, 4], ["sh_offset", 16, 4], ["sh_size", 20, 4], ["sh_link", 24, 4], ["sh_info", 28, 4], ["sh_addralign", 32, 4], ["sh_entsize", 36, 4]];
  const shent = is64 ? 64 : 40;
  for (let i = 0; i < shnum; i++) {
    const base = shoff + i * shent;
    for (const [n, at, s] of sh) add(`shdr[${i}].${n}`, base + at, s);
    const type = rd(base + 4, 4);
    const off = rd(base + (is64 ? 24 : 16), w);
    // The headers of the hash tables and the first version records.
    if (type === 5) ["nbucket", "nchain"].forEach((n, k) => add(`hash.${n}`, off + 4 * k, 4));
    if (type === 0x6ffffff6) ["nbuckets", "symoffset", "bloom_size", "bloom_shift"].forEach((n, k) => add(`gnu_hash.${n}`, off + 4 * k, 4));
    if (type === 0x6ffffffe) {
      add("verneed.vn_cnt", off + 2, 2);
      for (const [n, at] of [["vn_file", 4], ["vn_aux", 8], ["vn_next", 12]] as const) add(`verneed.${n}`, off + at, 4);
      const aux = off + rd(off + 8, 4);
      add("vernaux.vna_other", aux + 6, 2);
      for (const [n, at] of [["vna_name", 8], ["vna_next", 12]] as const) add(`vernaux.${n}`, aux + at, 4);
    }
    if (type === 0x6ffffffd) {
      add("verdef.vd_ndx", off + 4, 2);
      add("verdef.vd_cnt", off + 6, 2);
      for (const [n, at] of [["vd_aux", 12], ["vd_next", 16]] as const) add(`verdef.${n}`, off + at, 4);
    }
  }
  if (dyn) {
    for (let k = 0; (k + 1) * 2 * w <= dyn.size; k++) {
      add(`dyn[${k}].d_tag`, dyn.off + k * 2 * w, w);
      add(`dyn[${k}].d_val`, dyn.off + k * 2 * w + w, w);
    }
  }
  return out;
}

/** The boundary values a field is set to. */
function valuesFor(orig: bigint, size: number, fileSize: number): bigint[] {
  const mask = (1n << BigInt(size * 8)) - 1n;
  const vs = [0n, 1n, mask, BigInt(fileSize), BigInt(fileSize + 1), orig ^ 1n, orig + 0x1000n];
  if (size >= 4) vs.push(0x7fffffffn, 0x80000000n);
  return [...new Set(vs.map((v) => v & mask))].filter((v) => v !== orig);
}

function write(b: Uint8Array, f: Field, v: bigint, le: boolean): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (f.size === 2) dv.setUint16(f.at, Number(v), le);
  else if (f.size === 4) dv.setUint32(f.at, Number(v), le);
  else dv.setBigUint64(f.at, v, le);
}

function read(b: Uint8Array, f: Field, le: boolean): bigint {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return f.size === 2 ? BigInt(dv.getUint16(f.at, le)) : f.size === 4 ? BigInt(dv.getUint32(f.at, le)) : dv.getBigUint64(f.at, le);
}

describe.skipIf(FILES.length === 0)("hostile input: every structural field at its boundary values", () => {
  for (const file of FILES) {
    it(`${file.split("/").slice(-3).join("/")}: no trap, a status or an ElfPatchError for every mutant`, () => {
      const engine = CoreEngine.create("debug");
      const orig = Uint8Array.from(readFileSync(file));
      const le = orig[5] === 1;
      const fields = fieldsOf(orig);
      expect(fields.length).toBeGreaterThan(100);
      // The original parses and plans.
      expect(engine.parse(bufferSource(orig), file, ParseFlag.Refs).status).toBe(Status.Ok);
      engine.plan(bufferSource(orig), file, REQUEST);
      const outcomes = new Map<string, number>();
      let mutants = 0;
      for (const f of fields) {
        for (const v of valuesFor(read(orig, f, le), f.size, orig.length)) {
          const buf = Uint8Array.from(orig);
          write(buf, f, v, le);
          mutants++;
          let outcome: string;
          const parsed = engine.parse(bufferSource(buf), "mutant", ParseFlag.Refs);
          if (parsed.status !== Status.Ok) outcome = `parse:${parsed.status}`;
          else {
            try {
              engine.plan(bufferSource(buf), "mutant", REQUEST);
              outcome = "planned";
            } catch (err) {
              if (!(err instanceof ElfPatchError)) throw new Error(`${f.what} = 0x${v.toString(16)}: ${String(err)}`);
              expect(err.code, `${f.what} = 0x${v.toString(16)}: ${err.message}`).not.toBe(ErrorCode.INTERNAL);
              outcome = err.code;
            }
          }
          expect(outcome, `${f.what} = 0x${v.toString(16)}`).not.toMatch(new RegExp(`^parse:${Status.NeedRange}$`));
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        }
      }
      // Both kinds of answer: mutants the core plans (fields it does not depend on) and rejections.
      expect(outcomes.get("planned") ?? 0, JSON.stringify([...outcomes])).toBeGreaterThan(0);
      expect(outcomes.size, JSON.stringify([...outcomes])).toBeGreaterThan(3);
      console.log(`${file}: ${fields.length} fields, ${mutants} mutants: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    }, 120_000);
  }
});
