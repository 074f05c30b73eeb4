/**
 * Separate debug-info files (`objcopy --only-keep-debug`, what distributions ship under
 * /usr/lib/debug and what some wheels and conda packages carry next to their libraries) keep the
 * program headers of the object they belong to but not the contents of its allocated sections:
 * PT_DYNAMIC and PT_INTERP have no bytes in the file. A batch over a tree with such files patches
 * the real objects and skips the debug files (`no-dynamic`), untouched, instead of failing them.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../support/fixtures.js";
import { has } from "../support/oracle.js";

const CLI = join(repoRoot, "build", "js", "cli", "main.js");
const READY = ["gcc", "objcopy", "readelf"].every(has);
const ADD = "/opt/elfpatch-debug-files-test/lib";

interface Rec {
  type: string;
  path: string;
  status: string;
  skipReason?: string;
  error?: { code: string };
}

const sha = (p: string): string => createHash("sha256").update(readFileSync(p)).digest("hex");

function patch(dir: string): { status: number | null; records: Rec[] } {
  const r = spawnSync("node", [CLI, "patch", "--force-rpath", "--add-rpath", ADD, "--json", "--no-resolve", "--no-cache", "--no-progress", dir], {
    encoding: "utf8",
  });
  return { status: r.status, records: r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Rec).filter((x) => x.type === "file") };
}

/** The FileSiz of the first program header of `type` (readelf -lW), or null. */
function fileSize(path: string, type: string): number | null {
  const out = execFileSync("readelf", ["-lW", path], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const m = new RegExp(`^\\s*${type}\\s+0x[0-9a-f]+ 0x[0-9a-f]+ 0x[0-9a-f]+ (0x[0-9a-f]+)`, "m").exec(out);
  return m ? Number(m[1]) : null;
}

describe.skipIf(!READY)("separate debug-info files in a batch", () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-debug-files-"));
    writeFileSync(join(dir, "x.c"), "int x_value(void) { return 42; }\n");
    writeFileSync(join(dir, "main.c"), "#include <stdio.h>\nint x_value(void);\nint main(void) { printf(\"%d\\n\", x_value()); return 0; }\n");
    mkdirSync(join(dir, "tree", "lib"), { recursive: true });
    mkdirSync(join(dir, "tree", "bin"), { recursive: true });
    const lib = join(dir, "tree", "lib", "libx.so");
    const prog = join(dir, "tree", "bin", "prog");
    execFileSync("gcc", ["-g", "-shared", "-fPIC", "-o", lib, join(dir, "x.c")]);
    execFileSync("gcc", ["-g", "-o", prog, join(dir, "main.c"), `-L${join(dir, "tree", "lib")}`, "-lx"]);
    execFileSync("objcopy", ["--only-keep-debug", lib, `${lib}.debug`]);
    execFileSync("objcopy", ["--only-keep-debug", prog, `${prog}.debug`]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("the debug files are what the test means: PT_DYNAMIC and PT_INTERP without bytes in the file", () => {
    const tree = join(dir, "tree");
    expect(fileSize(join(tree, "lib", "libx.so.debug"), "DYNAMIC")).toBe(0);
    expect(fileSize(join(tree, "bin", "prog.debug"), "DYNAMIC")).toBe(0);
    expect(fileSize(join(tree, "bin", "prog.debug"), "INTERP")).toBe(0);
    expect(fileSize(join(tree, "lib", "libx.so"), "DYNAMIC")).toBeGreaterThan(0);
  });

  it("patches the objects, skips their debug files untouched (no-dynamic), exits 0; the re-run changes nothing", () => {
    const tree = join(dir, "run");
    cpSync(join(dir, "tree"), tree, { recursive: true });
    const debugFiles = [join(tree, "lib", "libx.so.debug"), join(tree, "bin", "prog.debug")];
    const before = debugFiles.map(sha);
    const first = patch(tree);
    expect(first.status).toBe(0);
    const by = new Map(first.records.map((r) => [r.path, r]));
    expect(by.get(join(tree, "lib", "libx.so"))?.status).toBe("patched");
    expect(by.get(join(tree, "bin", "prog"))?.status).toBe("patched");
    for (const d of debugFiles) {
      expect(by.get(d)?.status).toBe("skipped");
      expect(by.get(d)?.skipReason).toBe("no-dynamic");
    }
    expect(debugFiles.map(sha)).toEqual(before);
    // The patched program still runs (linked without a run path: libx comes from LD_LIBRARY_PATH).
    const run = spawnSync(join(tree, "bin", "prog"), [], { encoding: "utf8", env: { ...process.env, LD_LIBRARY_PATH: join(tree, "lib") } });
    expect(run.stdout.trim()).toBe("42");
    const again = patch(tree);
    expect(again.status).toBe(0);
    expect(again.records.filter((r) => r.status === "patched")).toEqual([]);
  });

  it("`show` reads a debug file as an object with no dynamic table and no interpreter", () => {
    const r = spawnSync("node", [CLI, "show", "--json", join(dir, "tree", "bin", "prog.debug")], { encoding: "utf8" });
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout) as { hasDynamic: boolean; interpreter: string | null; needed: string[] };
    expect(info.hasDynamic).toBe(false);
    expect(info.interpreter).toBeNull();
    expect(info.needed).toEqual([]);
  });

  // Distribution debug files, when this machine has some (Debian's *-dbgsym packages).
  const DISTRO = "/usr/lib/debug/.build-id";
  it.skipIf(!existsSync(DISTRO))("a copy of the machine's /usr/lib/debug/.build-id: no file fails", () => {
    const tree = join(dir, "distro");
    let n = 0;
    for (const sub of readdirSync(DISTRO).sort()) {
      for (const f of readdirSync(join(DISTRO, sub)).filter((x) => x.endsWith(".debug")).sort()) {
        if (n >= 200) break;
        mkdirSync(join(tree, sub), { recursive: true });
        cpSync(join(DISTRO, sub, f), join(tree, sub, f));
        n++;
      }
    }
    const r = patch(tree);
    expect(r.records.length).toBe(n);
    expect(r.records.filter((x) => x.status === "failed")).toEqual([]);
    expect(r.status).toBe(0);
  });
});
