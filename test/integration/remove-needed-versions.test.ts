/**
 * `--remove-needed` of a library the file has symbol version needs on: ld.so asserts
 * (`_dl_check_map_versions: Assertion 'needed != NULL'`) when a Verneed file is not loaded, which
 * is what patchelf leaves behind. elfpatch drops the Verneed entry and unversions its symbols, so
 * the program runs when the symbols come from elsewhere (here LD_PRELOAD), and the tables stay valid.
 */
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectFile, isFileError, patchFile } from "../../src/index.js";
import { buildFixtures, fixture, makeTempDir } from "../support/fixtures.js";
import { elflint, has, readelfDynamic, runProgram } from "../support/oracle.js";

describe.skipIf(!has("gcc"))("remove-needed drops the Verneed entry of the removed library", () => {
  let dir: string;
  beforeAll(async () => {
    await buildFixtures();
    dir = makeTempDir();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps a program runnable when the symbols are provided by a preloaded library", () => {
    const prog = join(dir, "use_versioned");
    copyFileSync(fixture("use_versioned"), prog);
    const lib = fixture("libversioned.so");
    const before = inspectFile(prog);
    if (isFileError(before)) throw new Error(before.error.message);
    const libName = before.needed.find((n) => n.includes("versioned"));
    expect(libName).toBeDefined();
    expect(Object.keys(before.versionNeeds)).toContain(libName);
    const lintBefore = elflint(prog);
    const expected = runProgram(fixture("use_versioned"), { ...process.env, LD_LIBRARY_PATH: join(lib, "..") });
    expect(expected.status).toBe(0);

    const r = patchFile(prog, { removeNeeded: [libName!] });
    if (isFileError(r)) throw new Error(r.error.message);
    expect(r.changed).toBe(true);
    expect(r.after!.needed).not.toContain(libName);
    expect(Object.keys(r.after!.versionNeeds)).not.toContain(libName);
    // Other version needs are kept whole, in order.
    const others = { ...before.versionNeeds };
    delete others[libName!];
    expect(r.after!.versionNeeds).toEqual(others);
    expect(elflint(prog)).toEqual(lintBefore);

    // The loader no longer asserts: with the library preloaded the program runs as before.
    const run = runProgram(prog, { ...process.env, LD_PRELOAD: lib });
    expect(run.stderr).not.toMatch(/Assertion|Inconsistency/);
    expect(run.status).toBe(0);
    expect(run.stdout).toBe(expected.stdout);

    // A second run changes nothing.
    const again = patchFile(prog, { removeNeeded: [libName!] });
    expect(isFileError(again) ? again.error.code : again.changed).toBe(false);
  });

  it("removes DT_VERNEED (and DT_VERSYM without Verdef) when the last Verneed file goes", () => {
    const lib = join(dir, "libdep_user.so");
    copyFileSync(fixture("libmain_runpath.so"), lib);
    const before = inspectFile(lib);
    if (isFileError(before)) throw new Error(before.error.message);
    const files = Object.keys(before.versionNeeds);
    expect(files.length).toBeGreaterThan(0);
    const r = patchFile(lib, { removeNeeded: files });
    if (isFileError(r)) throw new Error(r.error.message);
    expect(r.after!.versionNeeds).toEqual({});
    const tags = readelfDynamic(lib).map((e) => e.tag);
    expect(tags).not.toContain("VERNEED");
    expect(tags).not.toContain("VERSYM");
    // The one new complaint: the (now unused) .gnu.version section headers stay (documented).
    const lintBefore = elflint(fixture("libmain_runpath.so")).filter((l) => !/^No errors/.test(l));
    const lintAfter = elflint(lib).filter((l) => !/^No errors/.test(l));
    expect(lintAfter.filter((l) => !lintBefore.includes(l))).toEqual([
      ".gnu.versym section present without .gnu.versym_d or .gnu.versym_r",
    ]);
  });

  it("also with the Verneed layout patchelf writes (all Verneed entries, then all Vernaux): the table is written compactly", () => {
    const prog = join(dir, "use_versioned_patchelf_layout");
    copyFileSync(fixture("use_versioned"), prog);
    const before = inspectFile(prog);
    if (isFileError(before)) throw new Error(before.error.message);
    toPatchelfLayout(prog);
    // The same version needs, read through the other layout.
    const relaid = inspectFile(prog);
    if (isFileError(relaid)) throw new Error(relaid.error.message);
    expect(relaid.versionNeeds).toEqual(before.versionNeeds);
    const libName = before.needed.find((n) => n.includes("versioned"))!;
    const lintBefore = elflint(prog).filter((l) => !/^No errors/.test(l));

    const r = patchFile(prog, { removeNeeded: [libName] });
    if (isFileError(r)) throw new Error(r.error.message);
    const others = { ...before.versionNeeds };
    delete others[libName];
    expect(r.after!.versionNeeds).toEqual(others);
    // Nothing new for eu-elflint (the compact layout it expects is what gets written).
    const lintAfter = elflint(prog).filter((l) => !/^No errors/.test(l));
    expect(lintAfter.filter((l) => !lintBefore.includes(l))).toEqual([]);
    const run = runProgram(prog, { ...process.env, LD_PRELOAD: fixture("libversioned.so") });
    expect(run.stderr).not.toMatch(/Assertion|Inconsistency/);
    expect(run.status).toBe(0);
  });
});

/**
 * Rewrites the `.gnu.version_r` table of an x86-64 ELF file in the layout patchelf (and so
 * auditwheel) leaves: every Verneed entry first, then every Vernaux entry, in chain order.
 */
function toPatchelfLayout(path: string): void {
  const b = readFileSync(path);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  let off = -1;
  let count = 0;
  for (let i = 0; i < shnum; i++) {
    const h = shoff + i * shentsize;
    if (b.readUInt32LE(h + 4) === 0x6ffffffe) {
      off = Number(b.readBigUInt64LE(h + 0x18));
      count = b.readUInt32LE(h + 0x2c); // sh_info: number of Verneed entries
    }
  }
  expect(off).toBeGreaterThan(0);
  const vns: { head: Buffer; auxes: Buffer[] }[] = [];
  for (let i = 0, o = off; i < count; i++) {
    const head = Buffer.from(b.subarray(o, o + 16));
    const auxes: Buffer[] = [];
    for (let j = 0, a = o + head.readUInt32LE(8); j < head.readUInt16LE(2); j++) {
      auxes.push(Buffer.from(b.subarray(a, a + 16)));
      a += b.readUInt32LE(a + 12);
    }
    vns.push({ head, auxes });
    o += head.readUInt32LE(12);
  }
  expect(vns.length).toBeGreaterThan(1);
  let aux = off + 16 * vns.length;
  vns.forEach((vn, i) => {
    const at = off + 16 * i;
    vn.head.writeUInt32LE(aux - at, 8); // vn_aux
    vn.head.writeUInt32LE(i === vns.length - 1 ? 0 : 16, 12); // vn_next
    vn.head.copy(b, at);
    vn.auxes.forEach((x, j) => {
      x.writeUInt32LE(j === vn.auxes.length - 1 ? 0 : 16, 12); // vna_next
      x.copy(b, aux);
      aux += 16;
    });
  });
  writeFileSync(path, b);
}
