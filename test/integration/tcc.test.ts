/**
 * A program and a library from tcc, which writes ELF files with its own linker: no GNU ld, its own
 * section order (`.dynsym` first, `.data` before `.dynamic`, no `.comment`), `PT_PHDR` inside the
 * text segment, 2 MiB segment alignment and no padding for a grown table. The checks
 * (test/support/toolchain.ts): the seed recipe and three recipes that grow both files to a new
 * segment; the program must run and print the same, the loader must find libz where the run path
 * says, eu-elflint and readelf must say nothing new, a second run must write nothing, in place the
 * same bytes. Needs `tcc` (Debian's `tcc`; CI installs it).
 */
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { expect } from "vitest";
import { repoRoot } from "../support/fixtures.js";
import { has } from "../support/oracle.js";
import { describeToolchain } from "../support/toolchain.js";

const READY = has("tcc") && has("eu-elflint");
if (!READY && process.env.ELFPATCH_REQUIRE_CORPUS) throw new Error("tcc is missing (Debian: apt-get install tcc)");

describeToolchain({
  title: "a program and a library from tcc",
  ready: READY,
  files: ["main", "libt.so"],
  build(dir) {
    const src = path.join(repoRoot, "fixtures", "tcc");
    execFileSync("tcc", ["-shared", "-fPIC", "-o", path.join(dir, "libt.so"), path.join(src, "lib.c"), "-lz"]);
    execFileSync("tcc", ["-o", path.join(dir, "main"), path.join(src, "main.c"), `-L${dir}`, "-lt", "-Wl,-rpath,$ORIGIN"]);
  },
  output: /^tcc fixture: zlib \d+\.\d+[\w.]*, 42\n$/,
  layout: {
    what: "tcc's own linker, .dynsym before .text, no .comment",
    check(dir) {
      const sections = execFileSync("readelf", ["-W", "-S", path.join(dir, "main")], { encoding: "utf8" });
      expect(sections).not.toContain(".comment");
      expect(sections.indexOf(".dynsym")).toBeLessThan(sections.indexOf(".text"));
    },
  },
});
