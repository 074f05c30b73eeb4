/**
 * Files that relocate themselves are left alone: glibc's dynamic loaders (a run path trips an
 * assertion in the loader, a moved string table crashes it; patchelf's seed recipe breaks them too),
 * and static PIEs (`gcc -static-pie`; Debian's own `/usr/sbin/ldconfig` is one): `ET_DYN` with a
 * dynamic section and `DF_1_PIE`, but no interpreter. The kernel runs them without a loader, so no
 * dynamic edit has an effect, and a run path breaks them: glibc's static startup crashes on it
 * (measured with Debian's glibc 2.36: the same program linked with `-rpath` by the real linker dies
 * of SIGSEGV before `main`; patchelf's seed recipe leaves an `ldconfig` that crashes). elfpatch skips them (`static-pie`), writes
 * nothing, and they keep running; PIEs with an interpreter are still patched.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir, repoRoot } from "../support/fixtures.js";
import { has } from "../support/oracle.js";
import { patchJson, type PatchRecord } from "../support/patch-cli.js";
import { CROSS_PACKAGES, crossPackageDir } from "../corpus/list.js";

const SRC = path.join(repoRoot, "fixtures", "static", "hello.c");
const LDCONFIG = "/usr/sbin/ldconfig";

const patch = (args: string[]): PatchRecord[] => patchJson(args).files;

/** The loaders of the cross-arch corpus (test/corpus/build-corpus.sh), where unpacked. */
function crossLoaders(): string[] {
  const out: string[] = [];
  for (const pkg of CROSS_PACKAGES) {
    const dir = crossPackageDir(pkg);
    if (!fs.existsSync(dir)) continue;
    const found = execFileSync("find", [dir, "-name", "ld*.so*", "-type", "f"], { encoding: "utf8" }).trim();
    if (found) out.push(...found.split("\n").filter((f) => /\/ld(-linux[\w.-]*|64)?\.so\.\d+$/.test(f)));
  }
  return out;
}

const isStaticPie = (file: string): boolean => {
  const h = execFileSync("readelf", ["-W", "-h", "-l", "-d", file], { encoding: "utf8" });
  return /Type:\s+DYN/.test(h) && !/INTERP/.test(h) && /FLAGS_1.*PIE/.test(h);
};

describe.skipIf(!has("gcc"))("static PIEs", () => {
  let T = "";
  let spie = "";
  let pie = "";

  beforeAll(() => {
    T = makeTempDir("elfpatch-static-pie-");
    spie = path.join(T, "hello-static-pie");
    pie = path.join(T, "hello-pie");
    execFileSync("gcc", ["-static-pie", "-O1", "-o", spie, SRC]);
    execFileSync("gcc", ["-pie", "-fPIE", "-O1", "-o", pie, SRC]);
    expect(isStaticPie(spie)).toBe(true);
    expect(isStaticPie(pie)).toBe(false);
  });

  afterAll(() => {
    if (T) fs.rmSync(T, { recursive: true, force: true });
  });

  for (const [what, recipe] of [
    ["the seed recipe", ["--force-rpath", "--add-rpath", "/nix/profile/lib", "--shrink-rpath"]],
    ["a long run path", ["--add-rpath", Array.from({ length: 60 }, (_, i) => `/nix/store/${i}-dependency-xxxxxxxxxxxxxxxxxxxx/lib`).join(":")]],
    ["add-needed and set-soname", ["--add-needed", "libm.so.6", "--set-soname", "libhello.so"]],
  ] as [string, string[]][]) {
    it(`${what}: skipped (static-pie), not written, still runs`, () => {
      const file = path.join(T, `copy-${what.replace(/\W+/g, "-")}`);
      fs.copyFileSync(spie, file);
      fs.chmodSync(file, 0o755);
      const before = fs.readFileSync(file);
      const [rec] = patch([...recipe, file]);
      expect(rec).toMatchObject({ status: "skipped", skipReason: "static-pie" });
      expect(fs.readFileSync(file).equals(before)).toBe(true);
      expect(execFileSync(file, { encoding: "utf8" })).toBe("hello from a static build\n");
    });
  }

  it("glibc's dynamic loaders (the host's, and the cross packages' when unpacked): skipped (loader), untouched, still run programs", () => {
    const loaders = [fs.realpathSync("/lib64/ld-linux-x86-64.so.2"), ...crossLoaders()];
    for (const [k, src] of loaders.entries()) {
      const file = path.join(T, `loader-${k}`, path.basename(src));
      fs.mkdirSync(path.dirname(file));
      fs.copyFileSync(src, file);
      fs.chmodSync(file, 0o755);
      for (const recipe of [["--force-rpath", "--add-rpath", "/nix/profile/lib"], ["--set-soname", "ld-renamed.so.2"]]) {
        const [rec] = patch([...recipe, file]);
        expect(rec, src).toMatchObject({ status: "skipped", skipReason: "loader" });
        expect(fs.readFileSync(file).equals(fs.readFileSync(src)), src).toBe(true);
      }
    }
    // The host's copy still runs a program as its loader.
    expect(execFileSync(path.join(T, "loader-0", path.basename(loaders[0]!)), [pie], { encoding: "utf8" })).toBe("hello from a static build\n");
    // A library like any other is still patched: glibc's libc.so.6 (an entry point, a SONAME of its own).
    const libc = path.join(T, "libc.so.6");
    fs.copyFileSync(fs.realpathSync("/lib/x86_64-linux-gnu/libc.so.6"), libc);
    expect(patch(["--force-rpath", "--add-rpath", "/nix/profile/lib", libc])[0]).toMatchObject({ status: "patched" });
  });

  it("in a tree with a PIE and Debian's ldconfig: the static PIEs are skipped, the PIE is patched, all run", (ctx) => {
    const tree = path.join(T, "tree");
    fs.mkdirSync(tree);
    fs.copyFileSync(spie, path.join(tree, "spie"));
    fs.copyFileSync(pie, path.join(tree, "pie"));
    const withLdconfig = fs.existsSync(LDCONFIG) && isStaticPie(LDCONFIG);
    if (withLdconfig) fs.copyFileSync(LDCONFIG, path.join(tree, "ldconfig"));
    for (const n of fs.readdirSync(tree)) fs.chmodSync(path.join(tree, n), 0o755);
    const recs = patch(["--force-rpath", "--add-rpath", "/nix/profile/lib", tree]);
    const by = new Map(recs.map((r) => [path.basename(r.path!), r]));
    expect(by.get("spie")).toMatchObject({ status: "skipped", skipReason: "static-pie" });
    expect(by.get("pie")).toMatchObject({ status: "patched" });
    expect(execFileSync(path.join(tree, "pie"), { encoding: "utf8" })).toBe("hello from a static build\n");
    expect(execFileSync("readelf", ["-d", path.join(tree, "pie")], { encoding: "utf8" })).toMatch(/RPATH.*\/nix\/profile\/lib/);
    if (!withLdconfig) return ctx.skip();
    expect(by.get("ldconfig")).toMatchObject({ status: "skipped", skipReason: "static-pie" });
    expect(fs.readFileSync(path.join(tree, "ldconfig")).equals(fs.readFileSync(LDCONFIG))).toBe(true);
    const r = spawnSync(path.join(tree, "ldconfig"), ["-p"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/libs found in cache/);
  });
});
