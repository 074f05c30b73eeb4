/**
 * Hostile input: truncations at every byte offset and thousands of random mutations of real
 * libraries must never trap the core or throw from the host; each gives a status or a result.
 */
import { readFileSync, existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { bufferSource, CoreEngine } from "../../../src/core/engine.js";
import { ElfPatchError, ErrorCode } from "../../../src/errors.js";
import { ParseFlag } from "../../../src/shared/abi.js";
import { Status } from "../../../src/shared/status.js";
import type { EditRequest } from "../../../src/core/types.js";
import { rng } from "../../support/rng.js";

const HOST = "/usr/lib/x86_64-linux-gnu";
const SMALL = `${HOST}/libdl.so.2`; // 14 KB, has Verdef, Verneed, GNU hash
const MEDIUM = `${HOST}/libz.so.1`;

const REQUEST: EditRequest = {
  setRpath: "$ORIGIN",
  rpathTag: "rpath",
  replaceNeeded: [["libc.so.6", "libc.so.7"]],
  addNeeded: ["libextra.so"],
  noDefaultLib: true,
};

type Outcome = "ok" | ErrorCode;

/** Parses and plans `buf`; returns "ok" or the error code. Anything else propagates and fails the test. */
function run(engine: CoreEngine, buf: Uint8Array): { parse: Outcome; plan: Outcome } {
  const src = bufferSource(buf);
  const r = engine.parse(src, "fuzz", ParseFlag.Refs);
  const parse: Outcome = r.status === Status.Ok ? "ok" : (errorCodeOf(r.status) as ErrorCode);
  let plan: Outcome = parse;
  if (parse === "ok") {
    try {
      engine.plan(src, "fuzz", REQUEST);
      plan = "ok";
    } catch (err) {
      if (!(err instanceof ElfPatchError)) throw err;
      plan = err.code;
    }
  }
  return { parse, plan };
}

function errorCodeOf(status: Status): string {
  if (status === Status.NeedRange) return "NEED_RANGE_LEAKED";
  return `ELF_STATUS_${status}`;
}


const flavors = ["debug", "release"] as const;

describe.skipIf(!existsSync(SMALL))("hostile input", () => {
  for (const flavor of flavors) {
    it(`never traps on truncation at every byte offset (${flavor} core)`, () => {
      const engine = CoreEngine.create(flavor);
      const whole = readFileSync(SMALL);
      const seen = new Map<string, number>();
      for (let n = 0; n <= whole.length; n++) {
        const { parse, plan } = run(engine, whole.subarray(0, n));
        expect(parse).not.toBe(ErrorCode.INTERNAL);
        expect(plan).not.toBe(ErrorCode.INTERNAL);
        seen.set(String(parse), (seen.get(String(parse)) ?? 0) + 1);
      }
      // The complete file parses; short prefixes report truncation or bad magic, nothing else leaks.
      expect(run(engine, whole).parse).toBe("ok");
      for (const k of seen.keys()) expect(k).not.toMatch(/NEED_RANGE|INTERNAL/);
      expect(seen.get(`ELF_STATUS_${Status.Truncated}`)).toBeGreaterThan(whole.length / 2);
    });
  }

  it("never traps on 6000 random byte mutations of two real libraries", () => {
    const engine = CoreEngine.create("debug");
    const rand = rng(0x5eed);
    const outcomes = new Map<string, number>();
    for (const file of [SMALL, MEDIUM]) {
      const orig = readFileSync(file);
      for (let i = 0; i < 3000; i++) {
        const buf = Uint8Array.from(orig);
        const flips = 1 + Math.floor(rand() * 4);
        for (let k = 0; k < flips; k++) {
          // Half the mutations hit the first 4 KiB (ELF header, program headers, hash and symbol tables).
          const pos = rand() < 0.5 ? Math.floor(rand() * 4096) : Math.floor(rand() * buf.length);
          buf[pos] = Math.floor(rand() * 256);
        }
        const { parse, plan } = run(engine, buf);
        expect(parse).not.toBe(ErrorCode.INTERNAL);
        expect(plan).not.toBe(ErrorCode.INTERNAL);
        const key = `${parse}/${plan}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
    }
    for (const k of outcomes.keys()) expect(k).not.toMatch(/NEED_RANGE|INTERNAL/);
    // Mutations must have produced both successes and a variety of rejections.
    expect([...outcomes.keys()].length).toBeGreaterThan(3);
  });
});
