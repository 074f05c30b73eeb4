/**
 * ELF32 growth checked by a real loader: the i386 libraries of Debian's libc6-i386 package (from
 * the cross corpus) are grown (a long DT_RPATH forces moved tables, new segments and program
 * header room), then each one is listed by the package's own 32-bit ld.so, which maps every
 * segment: the output and exit status must be those of the unpatched copy.
 */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isFileError, patchFile } from "../../src/index.js";

const LIB32 = join(process.cwd(), ".cache", "corpus", "cross", "libc6-i386", "lib32");
const GCONV = join(process.cwd(), ".cache", "corpus", "cross", "libc6-i386", "usr", "lib32", "gconv");
const HAVE = existsSync(join(LIB32, "ld-linux.so.2"));
const LONG = "/nix/var/nix/profiles/per-user/alice/profile/lib:/opt/a/rather/long/directory/that/cannot/fit/in/place";

function list(ldso: string, dir: string, file: string): { status: number | null; out: string } {
  const r = spawnSync(ldso, ["--library-path", dir, "--list", file], { encoding: "utf8", timeout: 20_000 });
  // Addresses change from run to run; paths differ between the two copies.
  const out = (r.stdout + r.stderr).replace(/\(0x[0-9a-f]+\)/g, "(ADDR)").replaceAll(dir, "<dir>");
  return { status: r.status, out };
}

describe.skipIf(!HAVE && !process.env.ELFPATCH_REQUIRE_CORPUS)("ELF32 growth under the i386 loader", () => {
  let tmp: string;
  let orig: string;
  let grown: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), "elfpatch-elf32-"));
    orig = join(tmp, "orig");
    grown = join(tmp, "grown");
    cpSync(LIB32, orig, { recursive: true, verbatimSymlinks: true });
    cpSync(LIB32, grown, { recursive: true, verbatimSymlinks: true });
    // The gconv modules (about 250 small libraries) go next to libc in both copies.
    if (existsSync(GCONV)) {
      for (const d of [orig, grown]) cpSync(GCONV, d, { recursive: true, verbatimSymlinks: true });
    }
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("every grown i386 library is mapped and listed by ld.so exactly as before", () => {
    const names = readdirSync(grown).filter((n) => n.endsWith(".so") || /\.so\.\d/.test(n)).filter((n) => n !== "ld-linux.so.2");
    expect(names.length).toBeGreaterThan(existsSync(GCONV) ? 200 : 10);
    const strategies = new Map<string, number>();
    const problems: string[] = [];
    for (const n of names) {
      const r = patchFile(join(grown, n), {}, { rpath: { force: true, add: [LONG] } });
      if (isFileError(r)) {
        problems.push(`${n}: ${r.error.code}`);
        continue;
      }
      strategies.set(r.strategy, (strategies.get(r.strategy) ?? 0) + 1);
      const before = list(join(orig, "ld-linux.so.2"), orig, join(orig, n));
      const after = list(join(grown, "ld-linux.so.2"), grown, join(grown, n)); // its own (unpatched) ld.so
      if (after.status !== before.status || after.out !== before.out) {
        problems.push(`${n} (${r.strategy}): exit ${before.status} -> ${after.status}\n${before.out}---\n${after.out}`);
      }
    }
    console.log(`elf32: ${names.length} libraries; strategies ${JSON.stringify(Object.fromEntries(strategies))}`);
    expect(problems).toEqual([]);
    // Growth was really exercised, not just in-place edits.
    expect((strategies.get("new-segment") ?? 0) + (strategies.get("slack") ?? 0)).toBeGreaterThan(5);
  });
});
