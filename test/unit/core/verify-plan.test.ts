/**
 * The core parses every plan before anything is written (`verifyPlan`): a plan whose result does
 * not parse is never written, and what the planned file says (`after`) comes from that parse, not
 * from reading the file back. Checked here against the written result itself: on real libraries
 * of this machine and of the cross-arch corpus (ELF32/64, both byte orders), for edits that fit in
 * place, that use slack and that add a segment, applying the edit list to a copy of the file and
 * parsing that copy gives exactly `after`; and the undo runs restore the original bytes.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { bufferSource, CoreEngine } from "../../../src/core/engine.js";
import type { EditRequest } from "../../../src/core/types.js";
import { findElfFiles, listCorpus } from "../../corpus/list.js";

const REQUESTS: Record<string, EditRequest> = {
  "long DT_RPATH": { setRpath: "$ORIGIN/../lib:/nix/var/nix/profiles/per-user/alice/profile/lib:/opt/x/lib", rpathTag: "rpath" },
  "NEEDED + NODEFLIB": { addNeeded: ["libelfpatch-verify-test.so.1"], noDefaultLib: true },
  "SONAME + interpreter": { soname: "libelfpatch-renamed.so.7", interpreter: "/lib/ld-elfpatch-verify-test-with-a-long-name.so.1" },
};
/** Executables (the interpreter applies to files that have one). */
const EXES = findElfFiles("/usr/bin").slice(0, 150);

/** `bytes` with the edit list applied (the file grown as the plan says). */
function applied(bytes: Uint8Array, edits: { offset: number; bytes: Uint8Array }[], newSize: number): Uint8Array {
  const out = new Uint8Array(newSize);
  out.set(bytes.subarray(0, Math.min(bytes.length, newSize)));
  for (const e of edits) out.set(e.bytes, e.offset);
  return out;
}

describe("the core parses each plan before it is written", () => {
  const groups = listCorpus();
  const files = groups.flatMap((g) => (g.name === "host" ? g.files.slice(0, 250) : g.name.startsWith("cross-") ? g.files.slice(0, 40) : []));

  it.each(Object.keys(REQUESTS))("%s: `after` is what the written file says, and the undo runs restore it", (name) => {
    const engine = CoreEngine.create();
    const req = REQUESTS[name]!;
    const list = req.interpreter !== undefined ? EXES : files;
    const strategies = new Map<string, number>();
    let planned = 0;
    for (const f of list) {
      const bytes = new Uint8Array(readFileSync(f));
      let plan;
      try {
        plan = engine.plan(bufferSource(bytes), f, req);
      } catch {
        continue; // no dynamic section, no interpreter: nothing to plan
      }
      if (plan.edits.length === 0) continue;
      planned++;
      strategies.set(plan.strategy, (strategies.get(plan.strategy) ?? 0) + 1);
      expect(plan.after, f).toBeDefined();
      const written = applied(bytes, plan.edits, plan.newSize);
      const reread = engine.inspect(bufferSource(written), f);
      expect(plan.after, f).toEqual(reread);
      // Undo: the runs hold the original bytes of everything that changed inside the old size.
      const undone = written.slice(0, bytes.length);
      for (const u of plan.undo) undone.set(u.data, u.offset);
      expect(Buffer.from(undone).equals(Buffer.from(bytes)), f).toBe(true);
    }
    expect(planned).toBeGreaterThan(list.length / 2);
    // Both ways of growing were exercised (slack: no new bytes; new-segment: appended).
    expect([...strategies.keys()], JSON.stringify([...strategies])).toEqual(expect.arrayContaining(["slack", "new-segment"]));
  });
});
