/**
 * `--force-rpath --add-rpath P --shrink-rpath`: a DT_RPATH is inherited by the libraries a file
 * loads, so a directory that only serves a dependency of a dependency must stay. patchelf looks at
 * direct NEEDED only and drops it (NixOS/patchelf#265); the loader then fails. The oracle is
 * dlopen through ld.so.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isFileError, patchFile } from "../../src/index.js";
import { dlopenCheck, has } from "../support/oracle.js";

describe.skipIf(!has("gcc"))("transitive-aware shrink", () => {
  let dir: string;
  let libA: string;
  const profileRoot = (): string => join(dir, "profile");
  const profile = (): string => join(dir, "profile", "lib");

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "elfpatch-shrink-"));
    mkdirSync(profile(), { recursive: true });
    mkdirSync(join(dir, "pkg", "deps"), { recursive: true });
    const c = (name: string, src: string): string => {
      const p = join(dir, `${name}.c`);
      writeFileSync(p, src);
      return p;
    };
    const gcc = (args: string[]): void => void execFileSync("gcc", args, { stdio: "pipe" });
    // libC lives only in the profile; libB (next to the extension) needs it and has no run path.
    gcc(["-shared", "-fPIC", "-o", join(profile(), "libC.so"), "-Wl,-soname,libC.so", c("c", "int c(void){return 7;}\n")]);
    gcc(["-shared", "-fPIC", "-o", join(dir, "pkg", "deps", "libB.so"), "-Wl,-soname,libB.so",
      c("b", "int c(void); int b(void){return c()+1;}\n"), "-Wl,--no-as-needed", join(profile(), "libC.so")]);
    libA = join(dir, "pkg", "libA.so");
    gcc(["-shared", "-fPIC", "-o", libA, c("a", "int b(void); int a(void){return b()+1;}\n"), "-Wl,--no-as-needed",
      join(dir, "pkg", "deps", "libB.so"), "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/deps"]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps a profile directory that serves only a dependency of a dependency, and the library loads", () => {
    expect(dlopenCheck(libA).ok).toBe(false); // libC.so is nowhere the loader looks yet
    const policy = { force: true, add: [profile()], shrink: true, allowedPrefixes: ["$ORIGIN", profileRoot()] };
    const r = patchFile(libA, {}, { rpath: policy });
    if (isFileError(r)) throw new Error(r.error.message);
    expect(r.after?.rpath).toBe(`$ORIGIN/deps:${profile()}`);
    expect(r.after?.runpath).toBeNull();
    expect(dlopenCheck(libA)).toEqual({ ok: true, message: expect.any(String) });
    // The fixed point holds with the resolver in the loop.
    const again = patchFile(libA, {}, { rpath: policy });
    expect(isFileError(again) ? again.error : again.changed).toBe(false);
  });

  it("without --force-rpath (DT_RUNPATH is not inherited) the directory goes, as glibc would not use it", () => {
    const copy = join(dir, "pkg", "libA-runpath.so");
    copyFileSync(libA, copy);
    const r = patchFile(copy, {}, { rpath: { add: [profile()], shrink: true } });
    if (isFileError(r)) throw new Error(r.error.message);
    expect(r.after?.runpath).toBe("$ORIGIN/deps");
  });

  it.skipIf(!has("patchelf"))("patchelf's shrink drops it and the library no longer loads (the behaviour we fix)", () => {
    const copy = join(dir, "pkg", "libA-patchelf.so");
    copyFileSync(join(dir, "pkg", "libA.so"), copy);
    const run = (args: string[]): void => void spawnSync("patchelf", args, { stdio: "pipe" });
    run(["--set-rpath", "$ORIGIN/deps", copy]);
    run(["--force-rpath", "--add-rpath", profile(), copy]);
    run(["--force-rpath", "--shrink-rpath", "--allowed-rpath-prefixes", `$ORIGIN:${profileRoot()}`, copy]);
    const rpath = execFileSync("patchelf", ["--print-rpath", copy], { encoding: "utf8" }).trim();
    expect(rpath).toBe("$ORIGIN/deps");
    expect(dlopenCheck(copy).ok).toBe(false);
  });
});
