/**
 * In-place edits on gcc-built fixtures, judged by real tools: readelf (exactly the expected
 * dynamic entries changed), eu-elflint (no new complaint), the glibc loader (ld.so --list, dlopen,
 * running the programs). Every test edits a fresh copy of the fixture tree, never the cache.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { EditRequest, ElfInfo } from "../../src/core/types.js";
import { buildFixtures, fixture, fixtureNames, fixtureSourceDir, freshFixtureCopy, makeTempDir } from "../support/fixtures.js";
import {
  dlopenCheck, dynEdit, dynStrings, dynString, dynstrStrings, dynSymbols, elflint, expectOnlyChange, flags1, has,
  ldsoList, readelf, readelfDynamic, readelfInterpreter, runProgram, snapshot,
  type DynEntry, type ExpectedChange, type LdsoList,
} from "../support/oracle.js";

type Api = typeof import("../../src/index.js");
/** A successful patchFile result that wrote the file (so `after` is set). */
type Patched = Omit<Exclude<Awaited<ReturnType<Api["patchFile"]>>, { error: unknown }>, "after"> & { after: ElfInfo };

const LONG = "$ORIGIN/deps:/nonexistent/long/path/that/gives/room/for/edits";
const OUTPUT: Record<string, string> = {
  prog_pie: "dep=42\n", prog_nopie: "dep=42\n", prog_rpath: "dep=42\n", prog_extra: "dep=42\n",
  use_shared_rpath: "lib_rpath_sym=7\n", use_versioned: "versioned=3\n",
};

let api: Api;
let tree: string;
const f = (name: string): string => fixture(name, tree);
const real = (p: string): string => fs.realpathSync(p);

beforeAll(async () => {
  await buildFixtures();
});
beforeEach(() => {
  tree = freshFixtureCopy();
});
afterEach(() => {
  fs.rmSync(tree, { recursive: true, force: true });
});

const { setStr, retag, dropTags, dropNeeded, swapNeeded } = dynEdit;

/**
 * Patches `name` in the tree in place only (`grow: false`: these tests pin the in-place paths;
 * growth has its own tests); null when the API answers ELF_NO_ROOM and `noRoomOk` is set.
 */
async function edit(name: string, req: EditRequest, exp: ExpectedChange, noRoomOk = false): Promise<Patched | null> {
  const file = f(name);
  const bytes = fs.readFileSync(file);
  const before = snapshot(file);
  const r = await api.patchFile(file, req, { grow: false });
  if ("error" in r) {
    if (noRoomOk && r.error.code === "ELF_NO_ROOM") {
      expect(fs.readFileSync(file).equals(bytes), "ELF_NO_ROOM must leave the file alone").toBe(true);
      return null;
    }
    throw new Error(`patchFile(${name}) failed: ${r.error.code}: ${r.error.message}`);
  }
  expect(r.changed).toBe(true);
  expect(r.edits).toBeGreaterThan(0);
  expectOnlyChange(before, snapshot(file), exp);
  const after = r.after;
  if (!after) throw new Error("patchFile wrote the file but returned no `after` info");
  return { ...r, after };
}

function expectResolves(list: LdsoList, lib: string, file: string): void {
  expect(list.status, list.stderr).toBe(0);
  const got = list.libs.get(lib);
  expect(got && got !== "not found" ? real(got) : got, `${lib} resolution`).toBe(real(file));
}

function expectRuns(name: string, env?: NodeJS.ProcessEnv, output = OUTPUT[name]): void {
  const r = runProgram(f(name), env);
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe(output);
  expect(r.status).toBe(0);
}

// ---- the unmodified fixtures (no API needed) ----------------------------------------------------

describe("fixtures as built", () => {
  it("libshared_rpath.so stores its symbol name only inside the run path string (tail merge)", () => {
    const strings = dynstrStrings(f("libshared_rpath.so"));
    expect(strings).toContain("/opt/x/lib_rpath_sym");
    expect(strings).not.toContain("lib_rpath_sym");
    expect(dynSymbols(f("libshared_rpath.so"))).toContain("lib_rpath_sym");
  });

  it("programs run and the loader honours RUNPATH vs RPATH order", () => {
    for (const name of Object.keys(OUTPUT)) expectRuns(name);
    expectRuns("prog_pie", { LD_LIBRARY_PATH: path.join(tree, "alt") }, "dep=7\n");
    expectRuns("prog_rpath", { LD_LIBRARY_PATH: path.join(tree, "alt") }, "dep=42\n");
    expect(dlopenCheck(f("libmain_runpath.so"))).toEqual({ ok: true, message: "ok" });
    expect(dlopenCheck(f("libnorpath.so")).message).toMatch(/libdep\.so/);
    expectResolves(ldsoList(f("libmain_runpath.so")), "libdep.so", f("libdep.so"));
  });

  it.skipIf(!has("eu-elflint"))("eu-elflint has no complaint about any fixture", () => {
    for (const name of fixtureNames()) expect(elflint(f(name)), name).toEqual([]);
  });
});

describe("edits on fixture copies", () => {
  beforeAll(async () => {
    api = await import("../../src/index.js");
  });

  describe("run path", () => {
    it("set-rpath to a shorter string keeps DT_RUNPATH and the loader follows it", async () => {
      const r = await edit("libmain_runpath.so", { setRpath: "$ORIGIN/alt" }, { map: setStr("RUNPATH", "$ORIGIN/alt") });
      expect([r!.after.runpath, r!.after.rpath]).toEqual(["$ORIGIN/alt", null]);
      expectResolves(ldsoList(f("libmain_runpath.so")), "libdep.so", path.join(tree, "alt/libdep.so"));
      expect(dlopenCheck(f("libmain_runpath.so")).ok).toBe(true);
    });

    it("rpathTag rpath turns DT_RUNPATH into DT_RPATH, searched before LD_LIBRARY_PATH", async () => {
      const env = { LD_LIBRARY_PATH: path.join(tree, "alt") };
      expectResolves(ldsoList(f("libmain_runpath.so"), env), "libdep.so", path.join(tree, "alt/libdep.so"));
      const req: EditRequest = { setRpath: "$ORIGIN/deps", rpathTag: "rpath" };
      const r = await edit("libmain_runpath.so", req, { map: retag("RUNPATH", "RPATH", "$ORIGIN/deps") });
      expect([r!.after.runpath, r!.after.rpath]).toEqual([null, "$ORIGIN/deps"]);
      expectResolves(ldsoList(f("libmain_runpath.so"), env), "libdep.so", f("libdep.so"));
      expect(dlopenCheck(f("libmain_runpath.so")).ok).toBe(true);
    });

    it("set-rpath on a DT_RPATH library flips it back to DT_RUNPATH", async () => {
      const env = { LD_LIBRARY_PATH: path.join(tree, "alt") };
      expectResolves(ldsoList(f("libmain_rpath.so"), env), "libdep.so", f("libdep.so"));
      await edit("libmain_rpath.so", { setRpath: "$ORIGIN/deps" }, { map: retag("RPATH", "RUNPATH", "$ORIGIN/deps") });
      expectResolves(ldsoList(f("libmain_rpath.so"), env), "libdep.so", path.join(tree, "alt/libdep.so"));
      expect(dlopenCheck(f("libmain_rpath.so")).ok).toBe(true);
    });

    it("executables: RPATH <-> RUNPATH changes which libdep.so runs under LD_LIBRARY_PATH", async () => {
      const env = { LD_LIBRARY_PATH: path.join(tree, "alt") };
      const toRunpath = { map: retag("RPATH", "RUNPATH", "$ORIGIN/deps") };
      await edit("prog_rpath", { setRpath: "$ORIGIN/deps", rpathTag: "runpath" }, toRunpath);
      expectRuns("prog_rpath", env, "dep=7\n");
      expectRuns("prog_rpath");
      const toRpath = { map: retag("RUNPATH", "RPATH", "$ORIGIN/deps") };
      await edit("prog_nopie", { setRpath: "$ORIGIN/deps", rpathTag: "rpath" }, toRpath);
      expectRuns("prog_nopie", env, "dep=42\n");
    });

    it.each(["libmain_runpath.so", "libmain_rpath.so"])("remove-rpath on %s: libdep.so is then not found", async (name) => {
      const r = await edit(name, { removeRpath: true }, { map: dropTags("RPATH", "RUNPATH") });
      expect([r!.after.runpath, r!.after.rpath]).toEqual([null, null]);
      expect(dlopenCheck(f(name)).message).toMatch(/libdep\.so/);
      expect(dlopenCheck(f(name), { LD_LIBRARY_PATH: path.join(tree, "deps") }).ok).toBe(true);
    });

    it("set-rpath where there was none uses a spare DT_NULL slot (or answers ELF_NO_ROOM)", async () => {
      const info = await api.inspectFile(f("libnorpath.so"));
      expect("error" in info ? info : info.spareDynamicSlots).toBeGreaterThan(0);
      const added = [dynString("RUNPATH", "$ORIGIN/deps")];
      const r = await edit("libnorpath.so", { setRpath: "$ORIGIN/deps" }, { added, strszMayGrow: true }, true);
      if (!r) return;
      expect(r.after.runpath).toBe("$ORIGIN/deps");
      expect(r.after.spareDynamicSlots).toBe(r.before.spareDynamicSlots - 1);
      expect(dlopenCheck(f("libnorpath.so"))).toEqual({ ok: true, message: "ok" });
      expectResolves(ldsoList(f("libnorpath.so")), "libdep.so", f("libdep.so"));
    });
  });

  describe("tail-merged run path string (libshared_rpath.so)", () => {
    const symbolIntact = (): void => {
      expect(dynSymbols(f("libshared_rpath.so"))).toContain("lib_rpath_sym");
      expectRuns("use_shared_rpath");
    };

    it("force DT_RPATH keeps the shared string", async () => {
      const same = "/opt/x/lib_rpath_sym";
      await edit("libshared_rpath.so", { setRpath: same, rpathTag: "rpath" }, { map: retag("RUNPATH", "RPATH", same) });
      symbolIntact();
    });

    it("remove-rpath does not clobber the symbol name", async () => {
      await edit("libshared_rpath.so", { removeRpath: true }, { map: dropTags("RUNPATH") });
      symbolIntact();
    });

    it("set-rpath to a shorter string does not clobber the symbol name (or answers ELF_NO_ROOM)", async () => {
      const exp = { map: setStr("RUNPATH", "$ORIGIN"), strszMayGrow: true };
      const r = await edit("libshared_rpath.so", { setRpath: "$ORIGIN" }, exp, true);
      if (r) expect(r.after.runpath).toBe("$ORIGIN");
      symbolIntact();
    });
  });

  describe("DT_NEEDED", () => {
    it("add-needed puts the new entry first (or answers ELF_NO_ROOM)", async () => {
      const exp = { added: [dynString("NEEDED", "libextra.so")], strszMayGrow: true };
      const r = await edit("prog_pie", { addNeeded: ["libextra.so"] }, exp, true);
      if (!r) return;
      expect(dynStrings(readelfDynamic(f("prog_pie")), "NEEDED")).toEqual(["libextra.so", "libdep.so", "libc.so.6"]);
      expect(r.after.needed).toEqual(["libextra.so", "libdep.so", "libc.so.6"]);
      expectResolves(ldsoList(f("prog_pie")), "libextra.so", f("libextra.so"));
      expectRuns("prog_pie");
    });

    it("remove-needed of an unused library", async () => {
      expect(ldsoList(f("prog_extra")).libs.has("libextra.so")).toBe(true);
      const r = await edit("prog_extra", { removeNeeded: ["libextra.so"] }, { map: dropNeeded("libextra.so") });
      expect(r!.after.needed).toEqual(["libdep.so", "libc.so.6"]);
      const list = ldsoList(f("prog_extra"));
      expect(list.libs.has("libextra.so")).toBe(false);
      expectResolves(list, "libdep.so", f("libdep.so"));
      expectRuns("prog_extra");
    });

    it("remove-needed of a used library makes RTLD_NOW fail on its symbol", async () => {
      await edit("libmain_runpath.so", { removeNeeded: ["libdep.so"] }, { map: dropNeeded("libdep.so") });
      expect(dlopenCheck(f("libmain_runpath.so")).message).toMatch(/undefined symbol: dep_value/);
    });

    it.each([["prog_pie", "dep.so"], ["prog_nopie", "libq.so"]])("replace-needed in %s: libdep.so -> %s", async (name, to) => {
      fs.copyFileSync(f("libdep.so"), path.join(tree, "deps", to));
      const r = await edit(name, { replaceNeeded: [["libdep.so", to]] }, { map: swapNeeded("libdep.so", to) });
      expect(r!.after.needed).toEqual([to, "libc.so.6"]);
      const list = ldsoList(f(name));
      expect(list.libs.has("libdep.so")).toBe(false);
      expectResolves(list, to, path.join(tree, "deps", to));
      expectRuns(name);
    });

    it("replace-needed also renames the Verneed file entry", async () => {
      fs.copyFileSync(f("libversioned.so"), path.join(tree, "versioned.so"));
      const exp = { map: swapNeeded("libversioned.so", "versioned.so"), versionsMayChange: true };
      const r = await edit("use_versioned", { replaceNeeded: [["libversioned.so", "versioned.so"]] }, exp);
      const libc = r!.before.versionNeeds["libc.so.6"];
      expect(r!.after.versionNeeds).toEqual({ "versioned.so": ["VERS_2", "VERS_1"], "libc.so.6": libc });
      expect(readelf(["-V"], f("use_versioned"))).toMatch(/File: versioned\.so/);
      expectResolves(ldsoList(f("use_versioned")), "versioned.so", path.join(tree, "versioned.so"));
      expectRuns("use_versioned");
    });
  });

  describe("SONAME, flags, interpreter", () => {
    const shorter = [["libsoname_long.so", "libsoname.so.1"], ["libsoname.so", "libs.so.1"]];
    it.each(shorter)("set-soname %s -> %s", async (name, soname) => {
      const r = await edit(name, { soname }, { map: setStr("SONAME", soname) });
      expect(r!.after.soname).toBe(soname);
      expect(dlopenCheck(f(name)).ok).toBe(true);
      const exe = path.join(tree, "use_soname");
      execFileSync("gcc", ["-o", exe, path.join(fixtureSourceDir, "use_soname.c"), f(name)], { stdio: "pipe" });
      expect(dynStrings(readelfDynamic(exe), "NEEDED")).toContain(soname);
    });

    it("noDefaultLib on a PIE sets NODEFLIB next to PIE: libc is no longer found by default", async () => {
      const libc = ldsoList(f("prog_pie")).libs.get("libc.so.6")!;
      expect(libc.startsWith("/")).toBe(true);
      const withFlag = (d: DynEntry[]) => d.map((e) => (e.tag === "FLAGS_1" ? { tag: e.tag, value: "Flags: NODEFLIB PIE" } : e));
      const r = await edit("prog_pie", { noDefaultLib: true }, { map: withFlag });
      expect(r!.after.flags1.slice().sort()).toEqual(["NODEFLIB", "PIE"]);
      const list = ldsoList(f("prog_pie"));
      expect(list.status).not.toBe(0);
      expect(list.stderr).toMatch(/libc\.so\.6/);
      expectRuns("prog_pie", { LD_LIBRARY_PATH: path.dirname(libc) });
    });

    it("noDefaultLib on a library without DT_FLAGS_1 adds the tag in a spare slot", async () => {
      expect(flags1(readelfDynamic(f("libmain_runpath.so")))).toEqual([]);
      const added = [{ tag: "FLAGS_1", value: "Flags: NODEFLIB" }];
      const r = await edit("libmain_runpath.so", { noDefaultLib: true }, { added });
      expect(r!.after.flags1).toEqual(["NODEFLIB"]);
      expect(ldsoList(f("libmain_runpath.so")).stderr).toMatch(/libc\.so\.6/);
      expect(dlopenCheck(f("libmain_runpath.so")).ok).toBe(true);
    });

    it("set-interpreter to a shorter path (a symlink) or ELF_NO_ROOM when the temp dir is too long", async () => {
      const old = readelfInterpreter(f("prog_pie"))!;
      const dir = makeTempDir();
      try {
        const link = path.join(dir, "ld");
        fs.symlinkSync(old, link);
        const r = await edit("prog_pie", { interpreter: link }, {}, link.length > old.length);
        if (!r) return;
        expect(r.after.interpreter).toBe(link);
        expect(readelfInterpreter(f("prog_pie"))).toBe(link);
        expectRuns("prog_pie");
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe("no-op requests", () => {
    const twice: [string, string, EditRequest][] = [
      ["libmain_runpath.so", "set-rpath", { setRpath: "$ORIGIN/alt" }],
      ["libmain_runpath.so", "force rpath", { setRpath: "$ORIGIN/deps", rpathTag: "rpath" }],
      ["libmain_rpath.so", "remove-rpath", { removeRpath: true }],
      ["libshared_rpath.so", "remove-rpath (tail-merged)", { removeRpath: true }],
      ["prog_extra", "remove-needed", { removeNeeded: ["libextra.so"] }],
      ["prog_pie", "replace-needed", { replaceNeeded: [["libdep.so", "dep.so"]] }],
      ["libsoname_long.so", "set-soname", { soname: "libsoname.so.1" }],
      ["prog_pie", "no-default-lib", { noDefaultLib: true }],
    ];

    it.each(twice)("%s: %s applied twice writes nothing the second time", async (name, _what, req) => {
      const file = f(name);
      const first = await api.patchFile(file, req);
      expect("error" in first ? first.error : first.changed).toBe(true);
      const old = new Date("2001-02-03T04:05:06Z");
      fs.utimesSync(file, old, old);
      const bytes = fs.readFileSync(file);
      const plan = await api.planFile(file, req);
      expect("error" in plan ? plan.error : plan.edits).toEqual([]);
      const second = await api.patchFile(file, req);
      expect("error" in second ? second.error : [second.changed, second.edits]).toEqual([false, 0]);
      expect(fs.readFileSync(file).equals(bytes)).toBe(true);
      expect(fs.statSync(file).mtimeMs).toBe(old.getTime());
    });

    const noops: [string, EditRequest][] = [
      ["libmain_runpath.so", {}],
      ["libmain_runpath.so", { setRpath: LONG }],
      ["libmain_rpath.so", { setRpath: LONG, rpathTag: "rpath" }],
      ["libsoname.so", { soname: "libsoname.so.1" }],
      ["prog_pie", { interpreter: "/lib64/ld-linux-x86-64.so.2" }],
      ["prog_pie", { addNeeded: ["libdep.so"] }],
    ];

    it.each(noops)("planFile(%s, %j) plans no edit and patchFile changes nothing", async (name, req) => {
      const file = f(name);
      const bytes = fs.readFileSync(file);
      const plan = await api.planFile(file, req);
      expect("error" in plan ? plan.error : plan.edits).toEqual([]);
      const r = await api.patchFile(file, req);
      expect("error" in r ? r.error : r.changed).toBe(false);
      expect(fs.readFileSync(file).equals(bytes)).toBe(true);
    });

    it("planFile with a real edit plans sorted, non-overlapping writes and writes nothing", async () => {
      const file = f("libmain_runpath.so");
      const bytes = fs.readFileSync(file);
      const plan = await api.planFile(file, { setRpath: "$ORIGIN/alt", noDefaultLib: true });
      if ("error" in plan) throw new Error(plan.error.message);
      expect(plan.edits.length).toBeGreaterThan(0);
      expect(plan.newSize).toBe(bytes.length);
      for (let i = 1; i < plan.edits.length; i++) {
        expect(plan.edits[i].offset).toBeGreaterThanOrEqual(plan.edits[i - 1].offset + plan.edits[i - 1].bytes.length);
      }
      expect(fs.readFileSync(file).equals(bytes)).toBe(true);
    });
  });
});
