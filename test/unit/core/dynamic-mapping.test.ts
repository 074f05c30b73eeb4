/**
 * The loader reads `.dynamic` at PT_DYNAMIC's p_vaddr; an edit is only meaningful if p_offset is
 * where that address is mapped from. A file where they disagree can be shown, not edited.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { bufferSource, CoreEngine } from "../../../src/core/engine.js";
import { ElfPatchError } from "../../../src/errors.js";

const LIB = "/usr/lib/x86_64-linux-gnu/libz.so.1";

/** A copy of an ELF64 LE file whose PT_DYNAMIC p_offset is moved by `delta` bytes. */
function withDynamicOffsetMoved(bytes: Buffer, delta: number): Buffer {
  const b = Buffer.from(bytes);
  const phoff = Number(b.readBigUInt64LE(32));
  const phnum = b.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * 56;
    if (b.readUInt32LE(o) === 2) {
      b.writeBigUInt64LE(b.readBigUInt64LE(o + 8) + BigInt(delta), o + 8);
      return b;
    }
  }
  throw new Error("no PT_DYNAMIC");
}

describe("PT_DYNAMIC offset vs address", () => {
  it("refuses to edit when p_offset is not where p_vaddr is mapped from", () => {
    const engine = CoreEngine.create("debug");
    const orig = readFileSync(LIB);
    // Sanity: the real file plans fine.
    expect(engine.plan(bufferSource(orig), "ok", { noDefaultLib: true }).edits.length).toBeGreaterThan(0);
    const bad = withDynamicOffsetMoved(orig, -16); // the entries before the real array
    let code = "";
    try {
      engine.plan(bufferSource(bad), "bad", { noDefaultLib: true });
    } catch (err) {
      code = (err as ElfPatchError).code;
    }
    expect(code).toBe("ELF_BAD_DYNAMIC");
  });
});
