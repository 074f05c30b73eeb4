/**
 * A program and a library from tcc, which writes ELF files with its own linker: no GNU ld, its own
 * section order (`.dynsym` first, `.data` before `.dynamic`, no `.comment`), `PT_PHDR` inside the
 * text segment, 2 MiB segment alignment and no padding for a grown table. The seed recipe (the
 * profile is a temp dir that provides the library's libz) and three recipes that grow both files to
 * a new segment: the program must run and print the same, the loader must find libz where the run
 * path says, eu-elflint and readelf must say nothing new, and a second run must write nothing.
 * Needs `tcc` (Debian's `tcc`; CI installs it).
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir, repoRoot } from "../support/fixtures.js";
import { elflint, has, ldsoList } from "../support/oracle.js";
import { patchJson } from "../support/patch-cli.js";

const READY = has("tcc") && has("eu-elflint");
if (!READY && process.env.ELFPATCH_REQUIRE_CORPUS) throw new Error("tcc is missing (Debian: apt-get install tcc)");

const LONG = Array.from({ length: 40 }, (_, i) => `/nix/store/${String(i).padStart(3, "0")}-tcc-dependency-xxxxxxxxxxxx/lib`).join(":");
const FILES = ["main", "libt.so"];

/** eu-elflint's complaints, with program header numbers left out (a new PT_LOAD renumbers them). */
const complaints = (file: string): string[] => elflint(file).map((l) => l.replace(/program header entry \d+/, "program header entry N"));

/** readelf's warnings about the file (stderr of `readelf -W -a`). */
const readelfWarnings = (file: string): string => spawnSync("readelf", ["-W", "-a", file], { encoding: "utf8" }).stderr;

describe.skipIf(!READY)("a program and a library from tcc", () => {
  let T = "";
  let built = "";
  let expected = "";

  beforeAll(() => {
    T = makeTempDir("elfpatch-tcc-");
    built = path.join(T, "built");
    fs.mkdirSync(built);
    const src = path.join(repoRoot, "fixtures", "tcc");
    execFileSync("tcc", ["-shared", "-fPIC", "-o", path.join(built, "libt.so"), path.join(src, "lib.c"), "-lz"]);
    execFileSync("tcc", ["-o", path.join(built, "main"), path.join(src, "main.c"), `-L${built}`, "-lt", "-Wl,-rpath,$ORIGIN"]);
    expected = execFileSync(path.join(built, "main"), { encoding: "utf8" });
  }, 120_000);

  afterAll(() => {
    if (T) fs.rmSync(T, { recursive: true, force: true });
  });

  /** A fresh copy of the two files in their own directory. */
  function copy(name: string): string {
    const dir = path.join(T, name);
    fs.mkdirSync(dir);
    for (const f of FILES) fs.copyFileSync(path.join(built, f), path.join(dir, f));
    for (const f of FILES) fs.chmodSync(path.join(dir, f), 0o755);
    return dir;
  }

  /** The checks every recipe must pass on `dir`, patched with `args`. */
  function judge(dir: string, args: string[]): void {
    expect(execFileSync(path.join(dir, "main"), { encoding: "utf8" })).toBe(expected);
    for (const f of FILES) {
      expect(complaints(path.join(dir, f)), f).toEqual(complaints(path.join(built, f)));
      expect(readelfWarnings(path.join(dir, f)), f).toBe(readelfWarnings(path.join(built, f)));
    }
    const again = patchJson([...args, dir]);
    expect(again.summary, again.stderr).toMatchObject({ patched: 0, failed: 0, unchanged: 2 });
  }

  it("has the layout this test is about: tcc's own linker, RPATH $ORIGIN, no .comment", () => {
    expect(expected).toMatch(/^tcc fixture: zlib \d+\.\d+[\w.]*, 42\n$/);
    const sections = execFileSync("readelf", ["-W", "-S", path.join(built, "main")], { encoding: "utf8" });
    expect(sections).not.toContain(".comment");
    expect(sections.indexOf(".dynsym")).toBeLessThan(sections.indexOf(".text"));
    expect(execFileSync("readelf", ["-W", "-d", path.join(built, "main")], { encoding: "utf8" })).toContain("Library rpath: [$ORIGIN]");
  });

  it("the seed recipe: the library keeps the profile that provides libz, the program $ORIGIN; libz found there", () => {
    const dir = copy("seed");
    const profile = path.join(T, "profile", "lib");
    fs.mkdirSync(profile, { recursive: true });
    const libz = ldsoList(path.join(built, "libt.so")).libs.get("libz.so.1") ?? "";
    expect(libz, "the host has libz.so.1").toMatch(/^\//);
    fs.symlinkSync(libz, path.join(profile, "libz.so.1"));
    const args = ["--force-rpath", "--add-rpath", profile, "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${path.dirname(profile)}`];
    const run = patchJson([...args, dir]);
    expect(run.summary, run.stderr).toMatchObject({ failed: 0 });
    const rpath = (f: string): string =>
      /Library rpath: \[(.*)\]/.exec(execFileSync("readelf", ["-W", "-d", path.join(dir, f)], { encoding: "utf8" }))?.[1] ?? "";
    expect(rpath("libt.so")).toBe(profile);
    expect(rpath("main").split(":")[0]).toBe("$ORIGIN");
    const found = ldsoList(path.join(dir, "main"));
    expect(found.status, found.stderr).toBe(0);
    expect(found.libs.get("libt.so")).toBe(path.join(dir, "libt.so"));
    expect(found.libs.get("libz.so.1")).toBe(path.join(profile, "libz.so.1"));
    judge(dir, args);
  });

  const recipes: [string, string[]][] = [
    ["a long run path added", ["--force-rpath", "--add-rpath", LONG]],
    ["add-needed and a long run path set", ["--add-needed", "libm.so.6", "--set-rpath", `$ORIGIN:${LONG}`]],
    ["a longer interpreter", ["--set-interpreter", "INTERP"]],
  ];
  for (const [what, recipe] of recipes) {
    it(`${what}: grown to a new segment, runs, nothing new from eu-elflint or readelf, re-run a no-op`, () => {
      const dir = copy(`r${recipes.findIndex((r) => r[0] === what)}`);
      const interpDir = path.join(T, "a-rather-long-directory-for-the-loader/of/this/program");
      const interp = path.join(interpDir, "ld-linux-x86-64.so.2");
      if (!fs.existsSync(interp)) {
        fs.mkdirSync(interpDir, { recursive: true });
        fs.copyFileSync("/lib64/ld-linux-x86-64.so.2", interp);
      }
      const args = recipe.map((a) => (a === "INTERP" ? interp : a));
      const run = patchJson([...args, dir]);
      expect(run.summary, run.stderr).toMatchObject({ failed: 0 });
      const main = run.files.find((f) => f.path.endsWith("/main"));
      expect(main, run.stderr).toMatchObject({ status: "patched", strategy: "new-segment" });
      judge(dir, args);
    });
  }
});
