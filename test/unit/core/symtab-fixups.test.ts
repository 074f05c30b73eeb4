/**
 * The host half of moving `.symtab` symbols with their sections (the core never loads `.symtab`):
 * the table is streamed in windows, and each symbol whose `st_shndx` is a moved section gets its
 * `st_value` plus the section's delta, modulo the class's word, in the file's byte order. The
 * arithmetic is checked here on small tables of both classes and byte orders, across window
 * boundaries; on real files the property-layouts test (whose regression seeds move `.interp` and
 * its `.symtab` section symbol) and the corpus runs check the result with eu-elflint.
 */
import { describe, expect, it } from "vitest";
import { bufferSource, symtabEdits, type SymtabFixups } from "../../../src/core/engine.js";

interface Sym {
  value: bigint;
  shndx: number;
}

/** A file of `pad` zero bytes followed by a .symtab of `syms` (entry 0 is the null symbol). */
function fileWith(syms: Sym[], is64: boolean, le: boolean, pad = 100): { bytes: Uint8Array; off: number } {
  const ent = is64 ? 24 : 16;
  const bytes = new Uint8Array(pad + (syms.length + 1) * ent);
  const view = new DataView(bytes.buffer);
  syms.forEach((s, k) => {
    const o = pad + (k + 1) * ent;
    if (is64) {
      view.setUint16(o + 6, s.shndx, le);
      view.setBigUint64(o + 8, s.value, le);
    } else {
      view.setUint32(o + 4, Number(s.value), le);
      view.setUint16(o + 14, s.shndx, le);
    }
  });
  return { bytes, off: pad };
}

function apply(bytes: Uint8Array, edits: { offset: number; bytes: Uint8Array }[]): Uint8Array {
  const out = bytes.slice();
  for (const e of edits) out.set(e.bytes, e.offset);
  return out;
}

function values(bytes: Uint8Array, off: number, n: number, is64: boolean, le: boolean): bigint[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const ent = is64 ? 24 : 16;
  return Array.from({ length: n }, (_, k) => {
    const o = off + (k + 1) * ent;
    return is64 ? view.getBigUint64(o + 8, le) : BigInt(view.getUint32(o + 4, le));
  });
}

const syms: Sym[] = Array.from({ length: 40 }, (_, k) => ({ value: BigInt(0x1000 + k * 0x10), shndx: k % 5 }));

describe.each([
  { is64: true, le: true, name: "ELF64 little-endian" },
  { is64: true, le: false, name: "ELF64 big-endian" },
  { is64: false, le: true, name: "ELF32 little-endian" },
  { is64: false, le: false, name: "ELF32 big-endian" },
])("symtabEdits, $name", ({ is64, le }) => {
  const info = { class: (is64 ? 64 : 32) as 64 | 32, endian: (le ? "little" : "big") as "little" | "big" };
  const mask = is64 ? (1n << 64n) - 1n : (1n << 32n) - 1n;

  it("moves exactly the symbols of the moved sections, whatever the window size", () => {
    const { bytes, off } = fileWith(syms, is64, le);
    // Section 2 moves up by 0x500; section 4 moves down by 0x30 (an unsigned wrap-around delta)
    // and again up by 0x10 (two moves of one section add up).
    const deltas = new Map<number, bigint>([[2, 0x500n], [4, (-0x30n + 0x10n) & ((1n << 64n) - 1n)]]);
    const fix: SymtabFixups = { off, count: syms.length + 1, deltas };
    const expected = syms.map((s) => (s.shndx === 2 ? s.value + 0x500n : s.shndx === 4 ? (s.value - 0x20n) & mask : s.value));
    for (const window of [1, 3, 7, 16, 41, 1000]) {
      const edits = symtabEdits(bufferSource(bytes), info, fix, window);
      expect(edits).toHaveLength(syms.filter((s) => s.shndx === 2 || s.shndx === 4).length);
      const after = apply(bytes, edits);
      expect(values(after, off, syms.length, is64, le)).toEqual(expected);
      // Only st_value bytes change, and each edit carries the original bytes of its range.
      for (const e of edits) expect(Buffer.from(e.orig!).equals(Buffer.from(bytes.subarray(e.offset, e.offset + e.bytes.length)))).toBe(true);
      expect(after.subarray(0, off)).toEqual(bytes.subarray(0, off));
    }
  });

  it("leaves the null symbol alone and wraps at the class's word", () => {
    const big: Sym[] = [{ value: mask - 0xfn, shndx: 3 }];
    const { bytes, off } = fileWith(big, is64, le);
    // The null symbol (entry 0) has st_shndx 0: never a moved section's index, but check entry 0
    // is skipped even when section 0 were listed.
    const fix: SymtabFixups = { off, count: 2, deltas: new Map([[3, 0x20n], [0, 0x1n]]) };
    const edits = symtabEdits(bufferSource(bytes), info, fix);
    expect(edits).toHaveLength(1);
    expect(values(apply(bytes, edits), off, 1, is64, le)).toEqual([0x10n]);
  });
});

describe("symtabEdits on a crafted table", () => {
  it("refuses a table with more symbols in moved sections than any real file has (ELF_TOO_LARGE), holding none of them", () => {
    const n = 70000;
    const { bytes, off } = fileWith(Array.from({ length: n }, () => ({ value: 0x1000n, shndx: 7 })), true, true);
    const fix: SymtabFixups = { off, count: n + 1, deltas: new Map([[7, 0x10n]]) };
    expect(() => symtabEdits(bufferSource(bytes), { class: 64, endian: "little" }, fix)).toThrow(/Too many/);
  });
});
