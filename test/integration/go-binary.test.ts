/**
 * A program linked by Go's own linker (`go build`, dynamic through cgo): its layout differs from
 * the GNU toolchain's in the way that matters for growing the program header table: the section
 * header table sits right after the program headers, where a grown table would write its new entry
 * (found by this test: section 0 was overwritten, "zeroth section has nonzero name"). Each recipe
 * that needs a new segment must leave a program that runs and prints the same, section 0 a NULL
 * section, eu-elflint with nothing new (program header entries renumbered by the inserted
 * `PT_LOAD` aside), and a second run that writes nothing.
 * Needs `go` (Debian's `golang-go`; CI installs it).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir, repoRoot } from "../support/fixtures.js";
import { elflint, has } from "../support/oracle.js";
import { patchJson } from "../support/patch-cli.js";

const READY = has("go") && has("gcc");
if (!READY && process.env.ELFPATCH_REQUIRE_CORPUS) throw new Error("go is missing (Debian: apt-get install golang-go)");

const LONG = Array.from({ length: 80 }, (_, i) => `/nix/store/${String(i).padStart(3, "0")}-go-dependency-xxxxxxxxxxxxxxxx/lib`).join(":");

/** eu-elflint's complaints, with program header numbers left out (a new PT_LOAD renumbers them). */
const complaints = (file: string): string[] => elflint(file).map((l) => l.replace(/program header entry \d+/, "program header entry N"));

/** Section 0 as readelf prints it. */
function section0(file: string): string {
  const out = execFileSync("readelf", ["-W", "-S", file], { encoding: "utf8" });
  return out.split("\n").find((l) => l.includes("[ 0]"))!.trim();
}

describe.skipIf(!READY)("a program from Go's linker", () => {
  let T = "";
  let prog = "";
  let expected = "";

  beforeAll(() => {
    T = makeTempDir("elfpatch-go-");
    prog = path.join(T, "hello");
    const env = { ...process.env, GOCACHE: path.join(T, "gocache"), GOPATH: path.join(T, "gopath"), GO111MODULE: "off", GOTOOLCHAIN: "local", CGO_ENABLED: "1" };
    execFileSync("go", ["build", "-o", prog, path.join(repoRoot, "fixtures", "go", "main.go")], { env, cwd: T, stdio: ["ignore", "ignore", "pipe"] });
    expected = execFileSync(prog, { encoding: "utf8" });
  }, 300_000);

  afterAll(() => {
    if (T) fs.rmSync(T, { recursive: true, force: true });
  });

  it("has the layout this test is about: dynamic, section headers right after the program headers", () => {
    const b = fs.readFileSync(prog);
    const phoff = Number(b.readBigUInt64LE(0x20));
    const shoff = Number(b.readBigUInt64LE(0x28));
    const phnum = b.readUInt16LE(0x38);
    expect(shoff).toBe(phoff + phnum * 56);
    expect(execFileSync("readelf", ["-W", "-l", prog], { encoding: "utf8" })).toContain("INTERP");
    expect(expected).toBe("go fixture: true true\n");
  });

  const recipes: [string, string[]][] = [
    ["the seed recipe with a long run path", ["--force-rpath", "--add-rpath", LONG]],
    ["add-needed", ["--add-needed", "libm.so.6", "--add-rpath", "/opt/go-extra/lib"]],
    ["a longer interpreter with the long run path", ["--set-interpreter", "INTERP", "--add-rpath", LONG]],
  ];
  for (const [what, recipe] of recipes) {
    it(`${what}: grown, still runs, section 0 intact, nothing new from eu-elflint, re-run a no-op`, () => {
      const file = path.join(T, `hello-${recipes.findIndex((r) => r[0] === what)}`);
      fs.copyFileSync(prog, file);
      fs.chmodSync(file, 0o755);
      const interpDir = path.join(T, "a-rather-long-directory-for-the-loader/of/this/program");
      fs.mkdirSync(interpDir, { recursive: true });
      const interp = path.join(interpDir, "ld-linux-x86-64.so.2");
      if (!fs.existsSync(interp)) fs.copyFileSync("/lib64/ld-linux-x86-64.so.2", interp);
      const args = [...recipe.map((a) => (a === "INTERP" ? interp : a)), file];
      const first = patchJson(args);
      expect(first.files[0], first.stderr).toMatchObject({ status: "patched", strategy: "new-segment" });
      expect(execFileSync(file, { encoding: "utf8" })).toBe(expected);
      expect(section0(file)).toBe(section0(prog));
      expect(complaints(file)).toEqual(complaints(prog));
      expect(patchJson(args).summary).toMatchObject({ patched: 0, unchanged: 1 });
    });
  }
});
