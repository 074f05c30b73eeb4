/** `npm start` (the README's quick start): the demo patches its tree once, then finds nothing to do. */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

describe("npm start demo", () => {
  it("patches the demo venv, reaches the fixed point on the second run, and reports resolution", () => {
    const r = spawnSync("node", [join(process.cwd(), "build", "js", "cli", "demo.js")], { encoding: "utf8", timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const [first, second] = r.stdout.split("Second run");
    expect(first).toMatch(/_native\.so: patched \(/);
    expect(first).toMatch(/elfpatch: [1-9]\d* patched, \d+ unchanged, \d+ skipped, 0 failed/);
    expect(second).toMatch(/elfpatch: 0 patched, \d+ unchanged, \d+ skipped, 0 failed/);
    expect(second).toMatch(/_native\.so: ok; .*libextra\.so => nix\/profile\/lib\/libextra\.so \(rpath\)/);
  });
});
