/**
 * The checks for a program and a library written by a toolchain with its own linker (tcc, zig's
 * self-hosted linker): the seed recipe (the profile is a temp dir that provides the library's
 * libz) and three recipes that grow both files (two of them to a new segment). After each: the program runs and
 * prints the same, eu-elflint and readelf say nothing new, a second run writes nothing, and the
 * same recipe `--in-place` gives the same bytes.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir } from "./fixtures.js";
import { elflint, ldsoList } from "./oracle.js";
import { patchJson } from "./patch-cli.js";

export interface Toolchain {
  /** What the describe block says ("a program and a library from tcc"). */
  title: string;
  /** Whether the tool is here; when not, the tests skip. */
  ready: boolean;
  /** The program's and the library's file names, program first. */
  files: [string, string];
  /** Builds both files into `dir`; the program's run path starts with `$ORIGIN`, the library NEEDs libz. */
  build(dir: string): void;
  /** What the program prints (matched before any patching). */
  output: RegExp;
  /** Checks that the built files have the layout the test is about (`dir`: the built files). */
  layout: { what: string; check(dir: string): void };
}

const LONG = Array.from({ length: 40 }, (_, i) => `/nix/store/${String(i).padStart(3, "0")}-toolchain-dependency-xxxxxxxxxx/lib`).join(":");

/** eu-elflint's complaints, with program header numbers left out (a new PT_LOAD renumbers them). */
const complaints = (file: string): string[] => elflint(file).map((l) => l.replace(/program header entry \d+/g, "program header entry N"));

/** readelf's warnings about the file (stderr of `readelf -W -a`). */
const readelfWarnings = (file: string): string => spawnSync("readelf", ["-W", "-a", file], { encoding: "utf8" }).stderr;

/** DT_RPATH ("rpath") or DT_RUNPATH ("runpath"), "" when absent. */
const runPathOf = (file: string, kind: "rpath" | "runpath" = "rpath"): string =>
  new RegExp(`Library ${kind}: \\[(.*)\\]`).exec(execFileSync("readelf", ["-W", "-d", file], { encoding: "utf8" }))?.[1] ?? "";

export function describeToolchain(t: Toolchain): void {
  const [prog, lib] = t.files;
  describe.skipIf(!t.ready)(t.title, () => {
    let T = "";
    let built = "";
    let expected = "";

    beforeAll(() => {
      T = makeTempDir("elfpatch-toolchain-");
      built = path.join(T, "built");
      fs.mkdirSync(built);
      t.build(built);
      expected = execFileSync(path.join(built, prog), { encoding: "utf8" });
    }, 120_000);

    afterAll(() => {
      if (T) fs.rmSync(T, { recursive: true, force: true });
    });

    /** A fresh copy of the two files in their own directory. */
    function copy(name: string): string {
      const dir = path.join(T, name);
      fs.mkdirSync(dir);
      for (const f of t.files) {
        fs.copyFileSync(path.join(built, f), path.join(dir, f));
        fs.chmodSync(path.join(dir, f), 0o755);
      }
      return dir;
    }

    /** The checks every recipe must pass on `dir`, patched with `args`. */
    function judge(dir: string, args: string[]): void {
      expect(execFileSync(path.join(dir, prog), { encoding: "utf8" })).toBe(expected);
      for (const f of t.files) {
        expect(complaints(path.join(dir, f)), f).toEqual(complaints(path.join(built, f)));
        expect(readelfWarnings(path.join(dir, f)), f).toBe(readelfWarnings(path.join(built, f)));
      }
      const again = patchJson([...args, dir]);
      expect(again.summary, again.stderr).toMatchObject({ patched: 0, failed: 0, unchanged: 2 });
      const inPlace = copy(`${path.basename(dir)}-in-place`);
      const run = patchJson(["--in-place", ...args, inPlace]);
      expect(run.summary, run.stderr).toMatchObject({ failed: 0 });
      for (const f of t.files) expect(fs.readFileSync(path.join(inPlace, f)).equals(fs.readFileSync(path.join(dir, f))), f).toBe(true);
    }

    it(`has the layout this test is about: ${t.layout.what}`, () => {
      expect(expected).toMatch(t.output);
      const p = path.join(built, prog);
      expect((runPathOf(p) || runPathOf(p, "runpath")).split(":")[0]).toBe("$ORIGIN");
      t.layout.check(built);
    });

    it("the seed recipe: the library keeps the profile that provides libz, the program $ORIGIN; libz found there", () => {
      const dir = copy("seed");
      const profile = path.join(T, "profile", "lib");
      fs.mkdirSync(profile, { recursive: true });
      const libz = ldsoList(path.join(built, lib)).libs.get("libz.so.1") ?? "";
      expect(libz, "the host has libz.so.1").toMatch(/^\//);
      fs.symlinkSync(libz, path.join(profile, "libz.so.1"));
      const args = ["--force-rpath", "--add-rpath", profile, "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${path.dirname(profile)}`];
      const run = patchJson([...args, dir]);
      expect(run.summary, run.stderr).toMatchObject({ failed: 0 });
      expect(runPathOf(path.join(dir, lib))).toBe(profile);
      expect(runPathOf(path.join(dir, prog)).split(":")[0]).toBe("$ORIGIN");
      for (const f of t.files) expect(runPathOf(path.join(dir, f), "runpath"), f).toBe("");
      const found = ldsoList(path.join(dir, prog));
      expect(found.status, found.stderr).toBe(0);
      expect(found.libs.get(lib)).toBe(path.join(dir, lib));
      expect(found.libs.get("libz.so.1")).toBe(path.join(profile, "libz.so.1"));
      judge(dir, args);
    });

    // The strategies the program may take: a long run path needs a new segment; a longer
    // interpreter fits in the page padding after its segment where the linker leaves some (zig).
    const recipes: [string, string[], string[]][] = [
      ["a long run path added", ["--force-rpath", "--add-rpath", LONG], ["new-segment"]],
      ["add-needed and a long run path set", ["--add-needed", "libm.so.6", "--set-rpath", `$ORIGIN:${LONG}`], ["new-segment"]],
      ["a longer interpreter", ["--set-interpreter", "INTERP"], ["new-segment", "slack"]],
    ];
    recipes.forEach(([what, recipe, strategies], i) => {
      it(`${what}: grown (${strategies.join(" or ")}), runs, nothing new from eu-elflint or readelf, re-run a no-op, in place the same`, () => {
        const dir = copy(`r${i}`);
        const interpDir = path.join(T, "a-rather-long-directory-for-the-loader/of/this/program");
        const interp = path.join(interpDir, "ld-linux-x86-64.so.2");
        if (!fs.existsSync(interp)) {
          fs.mkdirSync(interpDir, { recursive: true });
          fs.copyFileSync("/lib64/ld-linux-x86-64.so.2", interp);
        }
        const args = recipe.map((a) => (a === "INTERP" ? interp : a));
        const run = patchJson([...args, dir]);
        expect(run.summary, run.stderr).toMatchObject({ failed: 0 });
        const main = run.files.find((f) => f.path.endsWith(`/${prog}`));
        expect(main, run.stderr).toMatchObject({ status: "patched" });
        expect(strategies, run.stderr).toContain(main!.strategy);
        judge(dir, args);
      });
    });
  });
}
