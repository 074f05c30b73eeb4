/** `patch --json` attaches each file's after-patch resolution (the static resolver's answer). */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { has } from "../support/oracle.js";

const cli = join(process.cwd(), "build", "js", "cli", "main.js");

describe.skipIf(!has("gcc"))("patch --json resolution", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-presolve-"));
    mkdirSync(join(dir, "pkg", "libs"), { recursive: true });
    writeFileSync(join(dir, "d.c"), "int d(void){return 1;}\n");
    writeFileSync(join(dir, "e.c"), "int d(void); int e(void){return d();}\n");
    execFileSync("gcc", ["-shared", "-fPIC", "-o", join(dir, "pkg", "libs", "libd.so"), "-Wl,-soname,libd.so", join(dir, "d.c")]);
    execFileSync("gcc", ["-shared", "-fPIC", "-o", join(dir, "pkg", "_e.so"), join(dir, "e.c"), "-Wl,--no-as-needed",
      join(dir, "pkg", "libs", "libd.so")]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (args: string[]): Record<string, any>[] => {
    const r = spawnSync("node", [cli, "patch", "--json", ...args, join(dir, "pkg")], { encoding: "utf8" });
    return r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l));
  };

  it("reports where each NEEDED resolves after the patch", () => {
    const before = run(["--dry-run"]); // nothing to do: unchanged records still carry no resolution under --dry-run
    expect(before.find((r) => r.path.endsWith("_e.so"))!.resolution).toBeUndefined();
    const recs = run(["--set-rpath", "$ORIGIN/libs"]);
    const e = recs.find((r) => r.path.endsWith("_e.so"))!;
    expect(e.status).toBe("patched");
    expect(e.resolution.status).toBe("ok");
    expect(e.resolution.missing).toEqual([]);
    const libd = e.resolution.needed.find((n: { name: string }) => n.name === "libd.so");
    expect(libd).toEqual({ name: "libd.so", path: join(dir, "pkg", "libs", "libd.so"), via: "runpath" });
  });

  it("reports a library that still does not resolve, and --no-resolve leaves the field out", () => {
    const recs = run(["--remove-rpath"]);
    const e = recs.find((r) => r.path.endsWith("_e.so"))!;
    expect(e.resolution.status).toBe("unresolved");
    expect(e.resolution.missing).toEqual(["libd.so"]);
    const quiet = run(["--remove-rpath", "--no-resolve"]);
    expect(quiet.find((r) => r.path.endsWith("_e.so"))!.resolution).toBeUndefined();
  });
});
