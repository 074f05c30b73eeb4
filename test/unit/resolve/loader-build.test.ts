/**
 * The target loader's build (src/resolve/loader-build.ts): its default directories and cache
 * path, read from its bytes. The oracle is the loader itself: `ld.so --help` (glibc >= 2.33)
 * prints both, and every real loader at hand must agree: the host's, Debian's i386 one (whose
 * directories are /lib32 and /usr/lib32) natively, and those of the other cross packages (arm64,
 * ppc64, s390x, powerpc, ARM, MIPS, riscv64, sparc64, hppa, m68k) under qemu-user. Then the resolver: a `--root` tree whose loader was built with other
 * directories than the host's is searched in those.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loaderBuild, loaderBuildOf, ownLoaderBuild } from "../../../src/resolve/loader-build.js";
import { Resolver } from "../../../src/resolve/resolver.js";
import { isFileError, patchFile } from "../../../src/index.js";
import { CROSS_LOADERS, crossPackageDir, RELEASES, releaseReady, releaseRoot } from "../../corpus/list.js";

const HOST_LOADER = "/lib64/ld-linux-x86-64.so.2";
const required = !!process.env.ELFPATCH_REQUIRE_CORPUS;
const hasTool = (t: string): boolean => spawnSync("sh", ["-c", `command -v ${t}`]).status === 0;

interface Loader {
  name: string;
  path: string;
  qemu: string | null;
  /** A directory with the loader's libc.so.6 and libm.so.6. */
  libDir: string;
}

const LOADERS: Loader[] = [
  { name: "host x86-64", path: HOST_LOADER, qemu: null, libDir: "/lib/x86_64-linux-gnu" },
  ...CROSS_LOADERS.map((l) => ({ name: l.pkg, path: join(crossPackageDir(l.pkg), l.loader), qemu: l.qemu, libDir: join(crossPackageDir(l.pkg), l.libDir) })),
];

const scratch = mkdtempSync(join(tmpdir(), "elfpatch-loader-lib-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/**
 * What the loader expands `$LIB` to: a copy of its libm.so.6 with DT_RPATH `/elfpatch-nowhere/$LIB`
 * (set by patchelf) listed under `LD_DEBUG=libs`, whose "search path=" line shows the expansion.
 */
function libExpansion(l: Loader): string | null {
  const lib = join(scratch, `${l.name}-libm.so.6`);
  copyFileSync(join(l.libDir, "libm.so.6"), lib);
  execFileSync("patchelf", ["--force-rpath", "--set-rpath", "/elfpatch-nowhere/$LIB", lib]);
  const args = [l.path, "--library-path", l.libDir, "--list", lib];
  const r = l.qemu ? spawnSync(l.qemu, ["-E", "LD_DEBUG=libs", ...args], { encoding: "utf8", timeout: 30_000 })
    : spawnSync(args[0]!, args.slice(1), { encoding: "utf8", env: { LD_DEBUG: "libs" }, timeout: 30_000 });
  // The directory itself comes last in its list, after its hwcaps subdirectories.
  const line = (r.stdout + r.stderr).split("\n").find((x) => x.includes("search path=/elfpatch-nowhere/"));
  const last = line?.replace(/^.*search path=/, "").replace(/\t.*$/, "").split(":").at(-1);
  return last?.startsWith("/elfpatch-nowhere/") ? last.slice("/elfpatch-nowhere/".length) : null;
}

/**
 * What `ld.so --help` says: the "(system search path)" lines and the "located via" cache; and
 * `ld.so --version`: "ld.so (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36."
 */
function helpOf(l: Loader): { systemDirs: string[]; cachePath: string | null; version: [number, number] | null; lib: string | null } | null {
  const run = (opt: string): string | null => {
    const [cmd, args] = l.qemu ? [l.qemu, [l.path, opt]] : [l.path, [opt]];
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 30_000 });
    return r.status === 0 ? r.stdout : null;
  };
  const help = run("--help");
  const version = run("--version");
  if (help === null || version === null) return null;
  const systemDirs = [...help.matchAll(/^\s+(\S+) \(system search path\)$/gm)].map((m) => m[1]!);
  const cache = /\(libraries located via (\S+)\)/.exec(help);
  const v = /release version (\d+)\.(\d+)\./.exec(version);
  return { systemDirs, cachePath: cache ? cache[1]! : null, version: v ? [Number(v[1]), Number(v[2])] : null, lib: libExpansion(l) };
}

/** `ldd --version` inside an installed release's root: "ldd (Debian GLIBC 2.31-13+deb11u11) 2.31". */
function releaseGlibc(root: string): [number, number] | null {
  const r = spawnSync("chroot", [root, "ldd", "--version"], { encoding: "utf8" });
  const m = /^ldd \(.*\) (\d+)\.(\d+)$/m.exec(r.stdout);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

describe("the loader's build, from its bytes", () => {
  for (const l of LOADERS) {
    const ready = existsSync(l.path) && (l.qemu === null || hasTool(l.qemu));
    const host = l.path === HOST_LOADER;
    it.skipIf(!ready && !(required || host))(`${l.name}: default directories, cache and release as --help and --version print them, $LIB as it expands it`, () => {
      expect(ready, `${l.path} and ${l.qemu ?? "its loader"} are needed (test/corpus/build-corpus.sh, qemu-user)`).toBe(true);
      const help = helpOf(l);
      expect(help, `${l.path} --help did not run`).not.toBeNull();
      expect(help!.systemDirs.length).toBeGreaterThan(0);
      expect(help!.lib, "$LIB's expansion in LD_DEBUG=libs").toMatch(/^lib/);
      expect(loaderBuildOf(readFileSync(l.path))).toEqual(help);
    });
  }

  // Other glibc releases (test/corpus/releases.txt): 2.31's loader has no --help or --version
  // (added in 2.33) and tells its release by its file name only (`ld-2.31.so`, the ABI path being a
  // symlink to it); the oracle is the release's own `ldd --version`.
  for (const suite of RELEASES) {
    const root = releaseRoot(suite);
    // `ldd --version` runs in chroot, which needs root: as an ordinary user this skips.
    it.skipIf(process.getuid?.() !== 0 || (!releaseReady(suite) && !required))(`${suite}: the release of its loader`, () => {
      expect(releaseReady(suite), `${suite} is needed (test/corpus/build-corpus.sh, as root with debootstrap)`).toBe(true);
      const glibc = releaseGlibc(root);
      expect(glibc, `chroot ${root} ldd --version`).not.toBeNull();
      const build = new Resolver({ root }).loaderBuild;
      expect(build?.version).toEqual(glibc);
      expect(build?.cachePath).toBe("/etc/ld.so.cache");
    });
  }

  it("files that are not a loader have neither directories nor a cache (libc.so.6 says its release)", () => {
    expect(loaderBuildOf(readFileSync("/usr/bin/ls"))).toEqual({ systemDirs: null, cachePath: null, version: null, lib: null });
    const hostRelease = loaderBuildOf(readFileSync(HOST_LOADER)).version;
    expect(hostRelease).not.toBeNull();
    expect(loaderBuildOf(readFileSync("/lib/x86_64-linux-gnu/libc.so.6"))).toEqual({ systemDirs: null, cachePath: null, version: hostRelease, lib: null });
    expect(loaderBuildOf(Buffer.from("nothing here"), "ld-2.31.so").version).toEqual([2, 31]);
    expect(loaderBuild(join(tmpdir(), "elfpatch-no-such-loader"))).toBeNull();
  });

  it("the loader that runs this process is the host's", () => {
    expect(ownLoaderBuild()).toEqual(loaderBuildOf(readFileSync(realpathSync(HOST_LOADER))));
  });
});

describe("the resolver searches the target loader's directories", () => {
  const i386 = join(crossPackageDir("libc6-i386"), "lib32/ld-linux.so.2");
  const root = mkdtempSync(join(tmpdir(), "elfpatch-loader-root-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it.skipIf(!existsSync(i386) && !required)("a root whose loader was built with /lib32 and /usr/lib32", () => {
    expect(existsSync(i386), "libc6-i386 is needed (test/corpus/build-corpus.sh)").toBe(true);
    // The root's loader file says /lib32, /usr/lib32, /lib, /usr/lib (it is only read, never run);
    // libc.so.6 is in /usr/lib32 only, and the root has no ld.so.cache.
    for (const d of ["lib64", "usr/lib32", "opt"]) mkdirSync(join(root, d), { recursive: true });
    copyFileSync(i386, join(root, "lib64/ld-linux-x86-64.so.2"));
    copyFileSync("/lib/x86_64-linux-gnu/libc.so.6", join(root, "usr/lib32/libc.so.6"));
    copyFileSync("/usr/lib/x86_64-linux-gnu/libz.so.1", join(root, "opt/libz.so.1"));
    const report = new Resolver({ root, mode: "list" }).resolve(join(root, "opt/libz.so.1"), { rpath: null, runpath: null });
    const libc = report.needed.find((n) => n.name === "libc.so.6");
    expect(libc).toMatchObject({ status: "found", path: "/usr/lib32/libc.so.6", via: "default" });
    // The same root read with Debian's directories (what the resolver used to assume) finds nothing.
    const debian = new Resolver({ root, mode: "list", defaultDirs: ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"] });
    expect(debian.resolve(join(root, "opt/libz.so.1"), { rpath: null, runpath: null }).needed.find((n) => n.name === "libc.so.6")?.status).toBe("missing");
  });

  it.skipIf(!existsSync(i386) && !required)("dlopen from a program: the loader its PT_INTERP names (as a nixpkgs Python names its store glibc's)", () => {
    expect(existsSync(i386), "libc6-i386 is needed (test/corpus/build-corpus.sh)").toBe(true);
    // No loader at /lib64 in this root; the program names /opt/glibc/lib/ld-linux-x86-64.so.2.
    const r2 = join(root, "nixlike");
    for (const d of ["opt/glibc/lib", "usr/lib32", "opt/bin", "opt/venv"]) mkdirSync(join(r2, d), { recursive: true });
    copyFileSync(i386, join(r2, "opt/glibc/lib/ld-linux-x86-64.so.2"));
    copyFileSync("/lib/x86_64-linux-gnu/libc.so.6", join(r2, "usr/lib32/libc.so.6"));
    copyFileSync("/usr/lib/x86_64-linux-gnu/libz.so.1", join(r2, "opt/venv/libz.so.1"));
    copyFileSync("/usr/bin/true", join(r2, "opt/bin/python3"));
    const set = patchFile(join(r2, "opt/bin/python3"), { interpreter: "/opt/glibc/lib/ld-linux-x86-64.so.2" });
    expect(isFileError(set)).toBe(false);
    const lib = join(r2, "opt/venv/libz.so.1");
    const libcOf = (res: Resolver): unknown => res.resolve(lib).needed.find((n) => n.name === "libc.so.6");
    const withExe = new Resolver({ root: r2, exe: "/opt/bin/python3" });
    // The program found libc in its loader's default directory; the library gets it loaded.
    expect(libcOf(withExe)).toMatchObject({ status: "found", path: "/usr/lib32/libc.so.6", via: "loaded" });
    expect(withExe.exeReport?.needed.find((n) => n.name === "libc.so.6")).toMatchObject({ status: "found", path: "/usr/lib32/libc.so.6", via: "default" });
    // Without the program, this root has no loader to read: Debian's directories, and no libc.
    expect(libcOf(new Resolver({ root: r2 }))).toMatchObject({ status: "missing" });
  });
});

