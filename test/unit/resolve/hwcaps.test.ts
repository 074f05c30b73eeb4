/**
 * src/resolve/hwcaps.ts against the system's ld.so:
 * - `activeHwcapsDirs` equals the "(supported, searched)" lines of `ld.so --help` under
 *   "Subdirectories of glibc-hwcaps directories" (by default: the running loader's answer), also
 *   with CPU features masked through `GLIBC_TUNABLES=glibc.cpu.hwcaps=-X`, and a process started
 *   under such a mask gives what its loader searches (`LD_DEBUG=libs`); the /proc/cpuinfo fallback
 *   agrees with the loader where the kernel shows the CPUID bits user space sees, and is a lower
 *   bound where it hides one;
 * - `$PLATFORM` equals the "(AT_PLATFORM; ...)" line, and the avx512_1 legacy bit the
 *   "avx512_1 (supported, searched)" line (glibc <= 2.36 prints legacy subdirectories);
 * - `$LIB` and `$PLATFORM` equal the directories ld.so searches for a RUNPATH of
 *   `T/L/$LIB:T/P/$PLATFORM` (`LD_DEBUG=libs`, the shortest `trying file=` under each prefix);
 * - ISA levels, flag intersection across processors, overrides and layout rules on fixed inputs.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import {
  activeHwcapsDirs, cacheIsaLevelOk, cpuFlags, dstValues, legacyCacheHwcaps, parseLoaderHelp, x86IsaLevel,
} from "../../../src/resolve/hwcaps.js";
import { repoRoot } from "../../support/fixtures.js";
import { has, LDSO } from "../../support/oracle.js";

const X86_64 = process.arch === "x64";
const CPUINFO = fs.existsSync("/proc/cpuinfo") ? fs.readFileSync("/proc/cpuinfo", "utf8") : "";
const haveLdso = X86_64 && fs.existsSync(LDSO);
/** GLIBC_TUNABLES glibc.cpu.hwcaps names -> /proc/cpuinfo flags (OSXSAVE shows as xsave). */
const TUNABLE_FLAG: Record<string, string> = {
  AVX512F: "avx512f", AVX512VL: "avx512vl", AVX2: "avx2", FMA: "fma", BMI2: "bmi2", LZCNT: "abm",
  MOVBE: "movbe", OSXSAVE: "xsave", POPCNT: "popcnt", SSE4_2: "sse4_2", SSSE3: "ssse3",
};

function masked(names: string[]): string {
  const drop = new Set(names.map((n) => TUNABLE_FLAG[n]!));
  return CPUINFO.replace(/^(flags\s*:)(.*)$/gm, (_, k: string, v: string) =>
    k + v.split(" ").filter((f) => !drop.has(f)).join(" "));
}

function ldsoHelp(names: string[]): string {
  const env = { ...process.env, GLIBC_TUNABLES: names.length ? `glibc.cpu.hwcaps=${names.map((n) => `-${n}`).join(",")}` : "" };
  const r = spawnSync(LDSO, ["--help"], { encoding: "utf8", env });
  if (r.status !== 0) throw new Error(`ld.so --help failed: ${r.stderr}`);
  return r.stdout;
}

/** The lines of one `ld.so --help` section, trimmed. */
function section(help: string, title: string): string[] {
  const lines = help.split("\n");
  const at = lines.findIndex((l) => l.startsWith(title));
  if (at < 0) return [];
  const end = lines.findIndex((l, i) => i > at && l.trim() === "");
  return lines.slice(at + 1, end < 0 ? undefined : end).map((l) => l.trim());
}

describe.runIf(haveLdso)("against ld.so --help", () => {
  const masks = [[], ...Object.keys(TUNABLE_FLAG).map((k) => [k]), ["AVX2", "AVX512VL"]];
  const supportedOf = (help: string): string[] =>
    section(help, "Subdirectories of glibc-hwcaps directories, in priority order:")
      .filter((l) => l.endsWith("(supported, searched)"))
      .map((l) => l.split(" ")[0]!);

  it("by default, the running loader's answer: its supported glibc-hwcaps subdirectories, $PLATFORM and legacy bits", () => {
    const help = ldsoHelp([]);
    expect(activeHwcapsDirs()).toEqual(supportedOf(help));
    expect(activeHwcapsDirs("x86_64")).toEqual(supportedOf(help));
    const legacy = section(help, "Legacy HWCAP subdirectories");
    const platform = legacy.find((l) => l.includes("(AT_PLATFORM"))?.split(" ")[0];
    if (platform) expect(dstValues().PLATFORM).toBe(platform);
    if (legacy.length > 0) {
      const avx512 = legacy.includes("avx512_1 (supported, searched)");
      expect((legacyCacheHwcaps()!.hwcap & 4n) !== 0n).toBe(avx512);
    }
    // Another machine's files get no answer from this loader.
    expect(activeHwcapsDirs("aarch64")).toEqual([]);
  });

  it("the loader's text with CPU features masked: parsed into the subdirectories and ISA level it supports", () => {
    const seen: string[] = [];
    for (const names of masks) {
      const help = ldsoHelp(names);
      const supported = supportedOf(help);
      expect(activeHwcapsDirs("x86_64", { loaderHelp: help }), `mask ${names}`).toEqual(supported);
      const level = supported.length ? Number(supported[0]!.slice("x86-64-v".length)) : 1;
      const ok = cacheIsaLevelOk("x86_64", { loaderHelp: help });
      expect([0, 1, 2, 3].map(ok), `mask ${names}`).toEqual([0, 1, 2, 3].map((l) => l + 1 <= level));
      seen.push(`${names.join(",") || "(none)"}: [${supported.join(" ")}]`);
    }
    console.log(`ld.so --help per mask:\n  ${seen.join("\n  ")}`);
  });

  // The fallback (no loader answer) reads /proc/cpuinfo, which is faithful only where the kernel
  // shows the CPUID bits user space sees: a VM kernel may hide one (seen: no `abm` while CPUID has
  // LZCNT), and then only the levels below the hidden feature can agree.
  it("the /proc/cpuinfo fallback agrees with the loader where the kernel shows what CPUID says", () => {
    const seen: string[] = [];
    const faithful = JSON.stringify(activeHwcapsDirs("x86_64", { cpuinfo: CPUINFO })) === JSON.stringify(supportedOf(ldsoHelp([])));
    for (const names of masks) {
      const supported = supportedOf(ldsoHelp(names));
      const fromFlags = activeHwcapsDirs("x86_64", { cpuinfo: masked(names) });
      seen.push(`${names.join(",") || "(none)"}: loader [${supported.join(" ")}], cpuinfo [${fromFlags.join(" ")}]`);
      // Never more than the loader supports; the same wherever the unmasked flags give the same.
      expect(supported.slice(supported.length - fromFlags.length), `mask ${names}`).toEqual(fromFlags);
      if (faithful) expect(fromFlags, `mask ${names}`).toEqual(supported);
    }
    console.log(`cpuinfo vs ld.so --help${faithful ? "" : " (this kernel's cpuinfo hides a feature: a lower bound only)"}:\n  ${seen.join("\n  ")}`);
  });
});

describe.runIf(haveLdso && has("gcc"))("against LD_DEBUG=libs", () => {
  it("$LIB and $PLATFORM are the directories ld.so expands a RUNPATH to", () => {
    const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-hwcaps-")));
    try {
      fs.writeFileSync(path.join(dir, "m.c"), "int main(void){return 0;}\n");
      const exe = path.join(dir, "m");
      const rp = `${dir}/L/$LIB:${dir}/P/$PLATFORM`;
      const cc = spawnSync("gcc", ["-o", exe, path.join(dir, "m.c"), "-Wl,--enable-new-dtags", `-Wl,-rpath,${rp}`], { encoding: "utf8" });
      expect(cc.status, cc.stderr).toBe(0);
      for (const names of [[], ["AVX2"]]) {
        const env = { ...process.env, LD_DEBUG: "libs", GLIBC_TUNABLES: names.length ? `glibc.cpu.hwcaps=-${names.join(",-")}` : "" };
        const r = spawnSync(exe, [], { encoding: "utf8", env });
        const tried = [...r.stderr.matchAll(/trying file=(\S+)\/libc\.so\.6$/gm)].map((m) => m[1]!);
        const shortest = (prefix: string) =>
          tried.filter((d) => d.startsWith(prefix)).sort((a, b) => a.length - b.length)[0]?.slice(prefix.length);
        const got = { LIB: shortest(`${dir}/L/`), PLATFORM: shortest(`${dir}/P/`) };
        console.log(`LD_DEBUG (${names.join(",") || "no mask"}): $LIB=${got.LIB} $PLATFORM=${got.PLATFORM}`);
        expect(dstValues({ cpuinfo: masked(names) })).toEqual(got);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.runIf(haveLdso && has("gcc") && fs.existsSync(path.join(repoRoot, "build/js/resolve/hwcaps.js")))("a process under GLIBC_TUNABLES, against LD_DEBUG=libs", () => {
  it("its glibc-hwcaps subdirectories are those its loader searches for a DT_RPATH directory under the same mask", () => {
    const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-hwcaps-")));
    try {
      fs.writeFileSync(path.join(dir, "m.c"), "int main(void){return 0;}\n");
      const exe = path.join(dir, "m");
      const cc = spawnSync("gcc", ["-o", exe, path.join(dir, "m.c"), "-Wl,--disable-new-dtags", `-Wl,-rpath,${dir}/R`], { encoding: "utf8" });
      expect(cc.status, cc.stderr).toBe(0);
      const module = path.join(repoRoot, "build/js/resolve/hwcaps.js");
      const seen = new Set<string>();
      for (const mask of ["", "glibc.cpu.hwcaps=-AVX512F", "glibc.cpu.hwcaps=-AVX2", "glibc.cpu.hwcaps=-SSE4_2"]) {
        const env = { ...process.env, GLIBC_TUNABLES: mask };
        const r = spawnSync(exe, [], { encoding: "utf8", env: { ...env, LD_DEBUG: "libs" } });
        const line = r.stderr.split("\n").find((l) => l.includes("search path=") && l.includes(`${dir}/R`)) ?? "";
        const theirs = line.replace(/^.*search path=/, "").replace(/\t.*$/, "").split(":")
          .filter((d) => d.startsWith(`${dir}/R/glibc-hwcaps/`)).map((d) => d.slice(`${dir}/R/glibc-hwcaps/`.length));
        expect(line, r.stderr.slice(0, 300)).not.toBe("");
        const script = `import { activeHwcapsDirs } from ${JSON.stringify(module)}; console.log(JSON.stringify(activeHwcapsDirs()));`;
        const node = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env });
        expect(node.status, node.stderr).toBe(0);
        expect(JSON.parse(node.stdout), `GLIBC_TUNABLES=${mask}`).toEqual(theirs);
        seen.add(JSON.stringify(theirs));
      }
      // The masks made a difference (else the comparison proves little).
      expect(seen.size).toBeGreaterThan(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.runIf(haveLdso && has("gcc") && has("strace") && fs.existsSync(path.join(repoRoot, "build/js/cli/main.js")))("asking the loader only when it matters", () => {
  it("check starts no ld.so --help for a tree without hwcaps subdirectories, and one when a run-path directory has glibc-hwcaps/", () => {
    const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "elfpatch-hwcaps-")));
    try {
      fs.mkdirSync(path.join(dir, "dep"));
      fs.writeFileSync(path.join(dir, "dep.c"), "int dep(void){return 1;}\n");
      fs.writeFileSync(path.join(dir, "app.c"), "int dep(void); int app(void){return dep();}\n");
      const cc = (args: string[]) => {
        const r = spawnSync("gcc", args, { encoding: "utf8" });
        expect(r.status, r.stderr).toBe(0);
      };
      cc(["-shared", "-fPIC", "-o", path.join(dir, "dep", "libdep.so"), path.join(dir, "dep.c")]);
      cc(["-shared", "-fPIC", "-o", path.join(dir, "libapp.so"), path.join(dir, "app.c"), `-L${dir}/dep`, "-ldep", "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/dep"]);
      const checkUnderStrace = (): { execs: string[]; path: string } => {
        const log = path.join(dir, "strace.log");
        const r = spawnSync("strace", ["-f", "-qq", "-e", "trace=execve", "-o", log, process.execPath,
          path.join(repoRoot, "build/js/cli/main.js"), "check", "--json", path.join(dir, "libapp.so")], { encoding: "utf8" });
        expect(r.status, r.stderr).toBe(0);
        const execs = fs.readFileSync(log, "utf8").split("\n").filter((l) => l.includes("execve(") && l.includes("--help"));
        const rec = r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { type: string; needed?: { name: string; path: string | null }[] })
          .find((x) => x.type === "file")!;
        return { execs, path: rec.needed!.find((e) => e.name === "libdep.so")!.path! };
      };
      const plain = checkUnderStrace();
      expect(plain.execs).toEqual([]);
      expect(plain.path).toBe(`${dir}/dep/libdep.so`);
      // A glibc-hwcaps copy for the best level this CPU supports: now the CPU matters, and the
      // loader is asked once; the copy is what check (as ld.so) picks.
      const best = activeHwcapsDirs()[0];
      fs.mkdirSync(path.join(dir, "dep", "glibc-hwcaps", best ?? "x86-64-v2"), { recursive: true });
      fs.copyFileSync(path.join(dir, "dep", "libdep.so"), path.join(dir, "dep", "glibc-hwcaps", best ?? "x86-64-v2", "libdep.so"));
      const hw = checkUnderStrace();
      expect(hw.execs.length).toBe(1);
      expect(hw.path).toBe(best ? `${dir}/dep/glibc-hwcaps/${best}/libdep.so` : `${dir}/dep/libdep.so`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the loader's --help text", () => {
  it("gives the supported subdirectories, the platform and legacy names, or nothing to go by", () => {
    const v236 = [
      "Subdirectories of glibc-hwcaps directories, in priority order:",
      "  x86-64-v4",
      "  x86-64-v3 (supported, searched)",
      "  x86-64-v2 (supported, searched)",
      "",
      "Legacy HWCAP subdirectories under library search path directories:",
      "  haswell (AT_PLATFORM; supported, searched)",
      "  tls (supported, searched)",
      "  avx512_1",
      "  x86_64 (supported, searched)",
      "",
    ].join("\n");
    expect(parseLoaderHelp(v236)).toEqual({ hwcaps: ["x86-64-v3", "x86-64-v2"], platform: "haswell", legacy: ["haswell", "tls", "x86_64"] });
    const opts = { loaderHelp: v236 };
    expect(activeHwcapsDirs("x86_64", opts)).toEqual(["x86-64-v3", "x86-64-v2"]);
    expect(dstValues({ ...opts, LIB: "x" }).PLATFORM).toBe("haswell");
    expect(legacyCacheHwcaps("x86_64", opts)).toEqual({ hwcap: (1n << 63n) | 2n, platformMask: 0xfn << 48n, platform: 1n << 50n });
    // Debian's i386 loader: none searched; glibc 2.31 and other loaders print no such section.
    expect(parseLoaderHelp("No subdirectories of glibc-hwcaps directories are searched.\n")).toEqual({ hwcaps: [], platform: null, legacy: null });
    expect(parseLoaderHelp("Usage: ld.so [OPTION]... EXECUTABLE-FILE [ARGS-FOR-PROGRAM...]\n")).toBeNull();
    // No answer: the flags decide.
    const v3 = "cmov cx8 fpu fxsr mmx sse sse2 cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave";
    expect(activeHwcapsDirs("x86_64", { loaderHelp: null, cpuinfo: `flags\t: ${v3}\n` })).toEqual(["x86-64-v3", "x86-64-v2"]);
  });
});

describe("fixed inputs", () => {
  const base = "cmov cx8 fpu fxsr mmx sse sse2";
  const v2 = `${base} cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3`;
  const v3 = `${v2} avx avx2 bmi1 bmi2 f16c fma abm movbe xsave`;
  const v4 = `${v3} avx512f avx512bw avx512cd avx512dq avx512vl`;
  const info = (vendor: string, ...flags: string[]) =>
    flags.map((f, i) => `processor\t: ${i}\nvendor_id\t: ${vendor}\nflags\t\t: ${f}\n`).join("\n");

  it("computes cumulative ISA levels", () => {
    const lvl = (s: string) => x86IsaLevel(new Set(s.split(" ")));
    expect([lvl("sse2"), lvl(base), lvl(v2), lvl(v3), lvl(v4)]).toEqual([0, 1, 2, 3, 4]);
    expect(lvl(v4.replace(" pni", ""))).toBe(1); // v3 and v4 need v2
    expect(activeHwcapsDirs(62, { cpuinfo: info("AuthenticAMD", v4) })).toEqual(["x86-64-v4", "x86-64-v3", "x86-64-v2"]);
    expect(activeHwcapsDirs("x86_64", { cpuinfo: info("GenuineIntel", v2) })).toEqual(["x86-64-v2"]);
    expect(activeHwcapsDirs("aarch64", { cpuinfo: info("GenuineIntel", v4) })).toEqual([]);
    expect(activeHwcapsDirs(183)).toEqual([]);
    const ok = cacheIsaLevelOk(62, { cpuinfo: info("GenuineIntel", v3) });
    expect([0, 1, 2, 3].map(ok)).toEqual([true, true, true, false]);
    expect(cacheIsaLevelOk("aarch64")(9)).toBe(true);
  });

  it("takes the flags every processor has", () => {
    expect(cpuFlags({ cpuinfo: info("GenuineIntel", v4, v3) })).toEqual(new Set(v3.split(" ")));
    expect(activeHwcapsDirs(62, { cpuinfo: info("GenuineIntel", v4, v2) })).toEqual(["x86-64-v2"]);
    expect(cpuFlags({ cpuinfo: "" }).size).toBe(0);
  });

  it("derives $PLATFORM from the vendor and flags, and $LIB from the libc layout", () => {
    const intel = (f: string) => dstValues({ machine: "x86_64", cpuinfo: info("GenuineIntel", f), LIB: "x" }).PLATFORM;
    expect(intel(v3)).toBe("haswell");
    expect(intel(`${v4} avx512er avx512pf`)).toBe("xeon_phi");
    expect(intel(v2)).toBe("x86_64");
    expect(dstValues({ machine: "x86_64", cpuinfo: info("AuthenticAMD", v4), LIB: "x" }).PLATFORM).toBe("x86_64");
    const lib = (files: string[], machine = "x86_64") => dstValues({ machine, PLATFORM: "p", exists: (p) => files.includes(p) }).LIB;
    expect(lib(["/lib/x86_64-linux-gnu/libc.so.6"])).toBe("lib/x86_64-linux-gnu"); // Debian, Ubuntu
    expect(lib(["/usr/lib64/libc.so.6"])).toBe("lib64"); // upstream, Fedora
    expect(lib([])).toBe("lib"); // NixOS (libc in <glibc>/lib)
    expect(lib(["/lib/aarch64-linux-gnu/libc.so.6"], "arm64")).toBe("lib/aarch64-linux-gnu");
    expect(dstValues({ LIB: "lib64", PLATFORM: "znver4" })).toEqual({ LIB: "lib64", PLATFORM: "znver4" });
  });

  it("gives the 2.36-2.39 legacy hwcap bits", () => {
    const rule = legacyCacheHwcaps(62, { cpuinfo: info("GenuineIntel", v4) })!;
    expect(rule).toEqual({ hwcap: (1n << 63n) | 6n, platformMask: 0xfn << 48n, platform: 1n << 50n });
    expect(legacyCacheHwcaps(62, { cpuinfo: info("AuthenticAMD", v4) })!.platform).toBe(0n);
    expect(legacyCacheHwcaps("aarch64")).toBeUndefined();
  });
});
