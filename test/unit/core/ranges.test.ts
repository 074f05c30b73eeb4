/**
 * The engine never reads a file whole and its memory stays flat:
 * - a 200 MiB "library" (a real one followed by lazily served zeros) is inspected and planned
 *   reading less than 1 MiB, with the same answers as the real library;
 * - the largest real library of the host corpus is read only in small part;
 * - one engine running inspect + plan over 2,000 files ends with the Wasm memory it had after
 *   the first pass over the corpus (no growth per file), below 64 MiB.
 */
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, statSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { bufferSource, CoreEngine, fdSource, type ByteSource } from "../../../src/core/engine.js";
import { ElfPatchError, ErrorCode } from "../../../src/errors.js";
import type { EditRequest } from "../../../src/core/types.js";
import { findElfFiles, HOST_LIB_DIR } from "../../corpus/list.js";

const LIBZ = `${HOST_LIB_DIR}/libz.so.1`;
const MiB = 1 << 20;
const HUGE = 200 * MiB;
/** A single read this large means the engine is reading (most of) the file: fail fast instead. */
const MAX_SINGLE_READ = 16 * MiB;
const REQUEST: EditRequest = { noDefaultLib: true };
const FILES = 2000;

interface ReadStats {
  calls: number;
  bytes: number;
  largest: number;
}

/** Wraps `src`, counting the calls and bytes of `read`. */
function counting(src: ByteSource): { src: ByteSource; stats: ReadStats } {
  const stats: ReadStats = { calls: 0, bytes: 0, largest: 0 };
  return {
    stats,
    src: {
      size: src.size,
      read(dst, off) {
        stats.calls++;
        stats.bytes += dst.length;
        stats.largest = Math.max(stats.largest, dst.length);
        if (dst.length > MAX_SINGLE_READ) throw new Error(`read of ${dst.length} bytes at ${off}`);
        src.read(dst, off);
      },
    },
  };
}

/** `real` followed by zeros up to `size` bytes; the zeros are produced per read, never stored. */
function zeroExtended(real: Uint8Array, size: number): ByteSource {
  return {
    size,
    read(dst, off) {
      if (off < 0 || off + dst.length > size) throw new ElfPatchError(ErrorCode.ELF_TRUNCATED, "Read past the end");
      dst.fill(0);
      if (off < real.length) dst.set(real.subarray(off, Math.min(real.length, off + dst.length)));
    },
  };
}

/** The engine's current Wasm memory size; null when it has no instance (never created, or discarded). */
function wasmMemoryBytes(engine: CoreEngine): number | null {
  const n = engine.memoryBytes();
  return n > 0 ? n : null;
}

const withFd = <T>(file: string, fn: (src: ByteSource) => T): T => {
  const fd = openSync(file, "r");
  try {
    return fn(fdSource(fd));
  } finally {
    closeSync(fd);
  }
};

describe.skipIf(!existsSync(LIBZ))("the engine reads ranges, never the whole file", () => {
  it("a 200 MiB library (libz + lazily served zeros) is inspected and planned reading < 1 MiB", () => {
    const real = readFileSync(LIBZ);
    const engine = CoreEngine.create();
    const ref = engine.inspect(bufferSource(real), "libz");
    const refPlan = engine.plan(bufferSource(real), "libz", REQUEST);
    expect(refPlan.edits.length).toBeGreaterThan(0);

    const huge = counting(zeroExtended(real, HUGE));
    const info = engine.inspect(huge.src, "huge");
    const afterInspect = { ...huge.stats };
    const plan = engine.plan(huge.src, "huge", REQUEST);
    console.log(
      `[ranges] 200 MiB libz: inspect read ${afterInspect.bytes} bytes in ${afterInspect.calls} calls; ` +
        `inspect + plan ${huge.stats.bytes} bytes in ${huge.stats.calls} calls (largest ${huge.stats.largest})`,
    );
    expect(huge.stats.bytes).toBeLessThan(MiB);
    expect(info).toEqual({ ...ref, path: "huge", size: HUGE });
    expect(plan.before).toEqual({ ...refPlan.before, path: "huge", size: HUGE });
    expect(plan.edits).toEqual(refPlan.edits);
    expect(wasmMemoryBytes(engine)!).toBeLessThan(16 * MiB);
  });

  it("the largest host library is read only in small part (inspect + plan)", () => {
    const candidates = findElfFiles(HOST_LIB_DIR)
      .map((file) => ({ file, size: statSync(file).size }))
      .sort((a, b) => b.size - a.size);
    const engine = CoreEngine.create();
    // The largest file the engine can plan on (a shared library, in practice libLLVM).
    for (const { file, size } of candidates.slice(0, 10)) {
      let stats: ReadStats;
      try {
        stats = withFd(file, (src) => {
          const c = counting(src);
          engine.inspect(c.src, file);
          engine.plan(c.src, file, REQUEST);
          return c.stats;
        });
      } catch (err) {
        if (!(err instanceof ElfPatchError) || err.code === ErrorCode.INTERNAL) throw err;
        continue; // e.g. not a dynamic object: try the next largest
      }
      const share = stats.bytes / size;
      console.log(
        `[ranges] ${file}: ${size} bytes; inspect + plan read ${stats.bytes} bytes ` +
          `(${(share * 100).toFixed(2)}%) in ${stats.calls} calls, largest ${stats.largest}`,
      );
      expect(share).toBeLessThan(0.25);
      return;
    }
    throw new Error("no plannable library among the 10 largest host ELF files");
  });

  it(`memory stays flat: one engine, inspect + plan over ${FILES} files`, () => {
    const files = findElfFiles(HOST_LIB_DIR);
    expect(files.length).toBeGreaterThan(100);
    const engine = CoreEngine.create();
    const outcomes: Record<string, number> = {};
    const perPass: number[] = [];
    let afterFirstPass: number | null = null;
    for (let i = 0; i < FILES; i++) {
      const file = files[i % files.length];
      let outcome = "ok";
      try {
        withFd(file, (src) => {
          engine.inspect(src, file);
          engine.plan(src, file, REQUEST);
        });
      } catch (err) {
        if (!(err instanceof ElfPatchError)) throw err;
        outcome = err.code;
      }
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      if ((i + 1) % files.length === 0 || i === FILES - 1) perPass.push(wasmMemoryBytes(engine) ?? -1);
      if (i + 1 === files.length) afterFirstPass = wasmMemoryBytes(engine);
    }
    const last = wasmMemoryBytes(engine);
    console.log(
      `[ranges] ${FILES} files (${files.length} distinct): ${JSON.stringify(outcomes)}; ` +
        `wasm memory after each pass (MiB): ${perPass.map((b) => (b / MiB).toFixed(1)).join(", ")}`,
    );
    expect(outcomes[ErrorCode.INTERNAL] ?? 0, "core traps (the instance is then replaced)").toBe(0);
    expect(afterFirstPass).not.toBeNull();
    expect(last).toBe(afterFirstPass);
    expect(last!).toBeLessThan(64 * MiB);
  });
});

/** `[offset, size]` of each named section (readelf -SW). */
function sections(file: string): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  for (const line of execFileSync("readelf", ["-SW", file], { encoding: "utf8" }).split("\n")) {
    const m = /\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)/.exec(line);
    if (m) out.set(m[1]!, [parseInt(m[2]!, 16), parseInt(m[3]!, 16)]);
  }
  return out;
}

/** Wraps `src`, noting every range read. */
function noting(src: ByteSource): { src: ByteSource; ranges: [number, number][] } {
  const ranges: [number, number][] = [];
  return { ranges, src: { size: src.size, read: (dst, off) => (ranges.push([off, off + dst.length]), src.read(dst, off)) } };
}

/**
 * A check whose caller reads no version names (the batch's, `versions: false`) leaves the symbol
 * version tables unread: a no-op plan makes no read for them (none starts inside either table),
 * and on libraries where the tables would take a read of their own it makes fewer reads than a
 * plan that wants the names, with the same answers otherwise.
 */
describe("a check without version names", () => {
  const libs = ["libstdc++.so.6", "libcrypto.so.3", "libsystemd.so.0", "libgcrypt.so.20", "libm.so.6"]
    .map((l) => `${HOST_LIB_DIR}/${l}`).filter((f) => existsSync(f));
  it.skipIf(libs.length === 0)("does not read .gnu.version_r / .gnu.version_d", () => {
    const engine = CoreEngine.create();
    let fewer = 0;
    for (const file of libs) {
      const s = sections(file);
      const tables = [s.get(".gnu.version_r"), s.get(".gnu.version_d")].filter((t): t is [number, number] => t !== undefined);
      const planned = (versions: boolean) => withFd(file, (fdSrc) => {
        const n = noting(fdSrc);
        return { plan: engine.plan(n.src, file, {}, true, versions), ranges: n.ranges };
      });
      const light = planned(false);
      const full = planned(true);
      expect(light.plan.edits).toEqual([]);
      const startsInTable = light.ranges.filter(([a]) => a > 0 && tables.some(([off, n]) => a >= off && a < off + n));
      expect(startsInTable, `${file}: reads ${JSON.stringify(light.ranges)}`).toEqual([]);
      expect(Object.keys(full.plan.before.versionNeeds).length).toBeGreaterThan(0);
      expect({ ...light.plan.before, versionNeeds: {}, versionDefs: [] }).toEqual({ ...full.plan.before, versionNeeds: {}, versionDefs: [] });
      if (light.ranges.length < full.ranges.length) fewer++;
    }
    expect(fewer, "libraries whose check made fewer reads without version names").toBeGreaterThan(0);
  });
});
