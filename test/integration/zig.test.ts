/**
 * A program and a library from zig's self-hosted ELF linker (`-fno-lld`; zig 0.12 from the npm
 * registry, fetched by test/corpus/build-corpus.sh), a layout no other linker writes: sections far
 * from file order (`.symtab` right after the program headers, `.dynamic` and the writable segment
 * at lower file offsets than the read-only and text segments they follow in memory), a `PT_TLS`
 * with file offset 0, a SONAME on the program, and `ld-linux-x86-64.so.2` among the NEEDED
 * entries. The checks (test/support/toolchain.ts): the seed recipe and three recipes that grow
 * both files to a new segment; the program runs and prints the same, eu-elflint and readelf say
 * nothing new (zig's files start with complaints of their own), a second run writes nothing, in
 * place the same bytes.
 */
import { execFileSync } from "node:child_process";
import * as os from "node:os";
import * as path from "node:path";
import { expect } from "vitest";
import { zigCompiler } from "../corpus/list.js";
import { repoRoot } from "../support/fixtures.js";
import { has } from "../support/oracle.js";
import { describeToolchain } from "../support/toolchain.js";

const zig = zigCompiler();
const READY = zig !== null && has("eu-elflint");
if (!READY && process.env.ELFPATCH_REQUIRE_CORPUS) throw new Error("zig is missing (test/corpus/build-corpus.sh fetches it)");

/** PT_LOAD entries as [file offset, virtual address]. */
function loads(file: string): [number, number][] {
  const out = execFileSync("readelf", ["-W", "-l", file], { encoding: "utf8" });
  return [...out.matchAll(/^\s+LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)/gm)].map((m) => [Number(m[1]), Number(m[2])]);
}

describeToolchain({
  title: "a program and a library from zig's self-hosted linker",
  ready: READY,
  files: ["main", "liblib.so"],
  build(dir) {
    const src = path.join(repoRoot, "fixtures", "zig");
    // zig's cache of its own libc pieces: kept between runs, per user (the corpus may be another user's).
    const cache = path.join(os.tmpdir(), `elfpatch-zig-cache-${process.getuid?.() ?? 0}`);
    const env = { ...process.env, ZIG_GLOBAL_CACHE_DIR: cache, ZIG_LOCAL_CACHE_DIR: path.join(dir, ".zig-cache") };
    const common = ["-lc", "-fno-lld", "-O", "ReleaseSmall", "-fstrip"];
    execFileSync(zig!, ["build-lib", "-dynamic", ...common, "-lz", path.join(src, "lib.zig"), `-femit-bin=${path.join(dir, "liblib.so")}`], { cwd: dir, env });
    execFileSync(zig!, ["build-exe", ...common, path.join(src, "main.zig"), "-L.", "-llib", "-rpath", "$ORIGIN", `-femit-bin=${path.join(dir, "main")}`], { cwd: dir, env });
  },
  output: /^zig fixture: zlib \d+\.\d+[\w.]*, 42\n$/,
  layout: {
    what: "segments out of file order, a program with a SONAME",
    check(dir) {
      const l = loads(path.join(dir, "main"));
      expect(l.length).toBeGreaterThan(2);
      // In memory order the file offsets go back: a later segment lies earlier in the file.
      expect(l.some(([off], i) => i > 0 && off < l[i - 1]![0]), JSON.stringify(l)).toBe(true);
      expect(execFileSync("readelf", ["-W", "-d", path.join(dir, "main")], { encoding: "utf8" })).toContain("Library soname: [libmain.so]");
    },
  },
});
